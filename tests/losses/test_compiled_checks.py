"""The losses inside a user's ``torch.compile`` (MMEngine's ``compile=True``): one graph, no
break, ``fullgraph=True`` works, and the value checks still run: at run time, immediate or
deferred by the mode, as in eager (each is one opaque operator of the graph).

One compiled step computes the focal loss (index labels + per-sample weight), QFL (tuple
target), VFL and the functional focal loss on soft and ``activated`` inputs; the same compiled
step is then fed bad values (same shapes: no recompilation) and must raise the errors an eager
call raises.
"""
import pytest
import torch

from focal_plugin.functional import (
    flush_value_checks,
    set_value_check_mode,
    sigmoid_focal_loss,
)
from focal_plugin.losses import StableFocalLoss, StableQualityFocalLoss, StableVarifocalLoss

FOCAL = StableFocalLoss(gamma=0.5)
QFL = StableQualityFocalLoss(beta=0.5)
VFL = StableVarifocalLoss(gamma=0.5)


def step(pred, labels, weight, scores, soft, probs):
    return (FOCAL(pred, labels, weight) + QFL(pred, (labels, scores))
            + VFL(pred, soft * (soft > 0.5))
            + sigmoid_focal_loss(pred, soft, gamma=0.5, reduction='mean')
            + sigmoid_focal_loss(probs, soft, gamma=0.5, reduction='mean', activated=True))


def good_inputs():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(12, 4, generator=g) * 3
    return dict(pred=pred, labels=torch.randint(0, 5, (12,), generator=g),
                weight=torch.rand(12, generator=g), scores=torch.rand(12, generator=g),
                soft=torch.rand(12, 4, generator=g), probs=torch.rand(12, 4, generator=g))


@pytest.fixture(scope='module')
def compiled():
    torch._dynamo.reset()
    return torch.compile(step, fullgraph=True, dynamic=False)


@pytest.mark.parametrize('mode', ['auto', 'deferred'])
def test_one_graph_same_values_and_gradients(compiled, mode):
    """(``fullgraph=True`` itself fails on any graph break.)"""
    set_value_check_mode(mode)
    try:
        inputs = good_inputs()
        results = {}
        for name, fn in (('compiled', compiled), ('eager', step)):
            pred = inputs['pred'].clone().requires_grad_(True)
            out = fn(**dict(inputs, pred=pred))
            (grad,) = torch.autograd.grad(out, pred)
            results[name] = out.detach(), grad
        flush_value_checks()
    finally:
        set_value_check_mode('auto')
    torch.testing.assert_close(results['compiled'][0], results['eager'][0], rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(results['compiled'][1], results['eager'][1], rtol=1e-5,
                               atol=1e-6)


BAD = [
    ('labels', torch.full((12,), 7), r'target labels must be in \[0, 4\]'),
    ('weight', torch.full((12,), -1.0), 'weight must be finite and >= 0'),
    ('scores', torch.full((12,), 2.0), r'targets must be probabilities/scores in \[0, 1\]'),
    ('probs', torch.full((12, 4), 3.0), r'inputs must be probabilities in \[0, 1\] with '
                                        r'activated=True'),
]


@pytest.mark.parametrize('mode', ['auto', 'deferred'])
@pytest.mark.parametrize('argument, value, message', BAD, ids=[b[0] for b in BAD])
def test_checks_run_inside_the_compiled_graph(compiled, mode, argument, value, message):
    set_value_check_mode(mode)
    try:
        with pytest.raises(ValueError, match=message):
            compiled(**dict(good_inputs(), **{argument: value}))
            assert mode == 'deferred'  # immediate checks raised inside the call
            flush_value_checks()  # deferred: reported at the next check
    finally:
        set_value_check_mode('auto')
