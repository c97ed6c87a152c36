import os

import pytest
import torch

# Two cores shared with other work: keep each test process on one thread so timings and
# results do not depend on oversubscription.
torch.set_num_threads(1)
os.environ.setdefault('OMP_NUM_THREADS', '1')
# The fused sigmoid focal loss compiles on first use ('compile'), not in the background
# ('auto', the default): a test must not switch kernels half-way through a comparison.
os.environ.setdefault('FOCAL_PLUGIN_FUSED', 'compile')
# Where the CPU stress configs find the real MNIST test split (their data_root reads it):
# the offline copy beside the checkout, unless the caller points elsewhere.
REAL_MNIST_T10K = os.environ.setdefault('FOCAL_MNIST_T10K', os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared', 'data',
    'mnist-t10k'))

# The hard points the developers' guide asks for.
SATURATING_LOGITS = [0.0, 1.0, -1.0, 10.0, -10.0, 20.0, -20.0, 40.0, -40.0, 100.0, -100.0,
                     1e4, -1e4]
GAMMAS = [0.01, 0.1, 0.5, 0.9, 1.0, 2.0, 5.0]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def saturating_logits():
    return torch.tensor(SATURATING_LOGITS)


def loss_and_grad(fn, x, target, **kwargs):
    """``(loss, d loss.sum() / d x)`` of ``fn(x, target, **kwargs)`` on a fresh leaf copy of x."""
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, target, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad
