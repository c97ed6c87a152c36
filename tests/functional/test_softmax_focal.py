"""Softmax focal loss: saturated softmax, float64 reference, label smoothing, ignore_index."""
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import GAMMAS, loss_and_grad
from reference import softmax_focal_row

from focal_plugin.functional import log1m_softmax, softmax_focal_loss

grad_of = partial(loss_and_grad, softmax_focal_loss)  # (loss, d loss.sum() / d x)


@pytest.mark.parametrize('scale', [1.0, 20.0, 100.0, 1e4])
def test_log1m_softmax_is_exact_where_one_minus_p_rounds_to_zero(scale):
    x = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.5, 0.2]]) * scale
    ours = log1m_softmax(x).double()
    xd = x.double()
    lse = torch.logsumexp(xd, 1, keepdim=True)
    ref = torch.stack([torch.logsumexp(torch.cat([xd[:, :c], xd[:, c + 1:]], 1), 1)
                       for c in range(3)], 1) - lse.squeeze(1)[:, None]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('stabilizer', ['exact', 'epsilon'])
@pytest.mark.parametrize('gamma', GAMMAS)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16,
                                   torch.float16], ids=str)
@pytest.mark.parametrize('scale', [1.0, 20.0, 100.0, 1e4])
def test_finite_when_the_softmax_saturates(stabilizer, gamma, dtype, scale):
    x = (torch.tensor([[3.0, -1.0, 0.5], [-2.0, 4.0, 1.0], [0.0, 0.0, 5.0]]) * scale)
    x = x.to(dtype)
    y = torch.tensor([0, 1, 2])  # the saturated class is the correct one
    loss, grad = grad_of(x, y, gamma=gamma, stabilizer=stabilizer, label_smoothing=0.1)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize('gamma', [0.1, 0.5, 0.9])
def test_none_mode_fails_when_the_softmax_saturates(gamma):
    x = torch.tensor([[40.0, 0.0, 0.0]])
    _, grad = grad_of(x, torch.tensor([0]), gamma=gamma, stabilizer='none')
    assert torch.isnan(grad).any()


@pytest.mark.parametrize('gamma', GAMMAS)
def test_matches_high_precision_reference(gamma):
    torch.manual_seed(1)
    x = torch.randn(40, 4) * 6
    y = torch.randint(0, 4, (40,))
    alpha = [0.25, 0.5, 0.75, 1.0]
    loss, grad = grad_of(x, y, alpha=alpha, gamma=gamma, reduction='none')
    for i in range(40):
        ref_loss, ref_grad = softmax_focal_row(x[i].tolist(), int(y[i]), gamma, alpha)
        assert loss[i].item() == pytest.approx(ref_loss, rel=1e-5, abs=1e-30)
        torch.testing.assert_close(grad[i].double(), torch.tensor(ref_grad, dtype=torch.float64),
                                   rtol=1e-4, atol=1e-6 * max(abs(g) for g in ref_grad))


def test_gamma_zero_is_cross_entropy_with_smoothing_weights_and_ignore():
    torch.manual_seed(2)
    x = torch.randn(8, 5, 3, 3)
    y = torch.randint(0, 5, (8, 3, 3))
    y[0, 0, 0] = -100
    w = [1.0, 2.0, 0.5, 1.0, 3.0]
    ours = softmax_focal_loss(x, y, gamma=0.0, class_weight=w, label_smoothing=0.1,
                              reduction='none')
    ref = F.cross_entropy(x, y, weight=torch.tensor(w), label_smoothing=0.1, reduction='none')
    # F.cross_entropy applies the class weight inside the smoothing sum, as we do
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert ours[0, 0, 0] == 0
    mean = softmax_focal_loss(x, y, gamma=0.0, reduction='mean')
    torch.testing.assert_close(mean, F.cross_entropy(x, y), rtol=1e-5, atol=1e-6)


def test_all_ignored_gives_zero_and_zero_grad():
    x = torch.randn(4, 3, requires_grad=True)
    loss = softmax_focal_loss(x, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(gamma=-1.0), ValueError, 'gamma'),
    (dict(alpha=[0.5, 0.5]), ValueError, 'alpha'),
    (dict(class_weight=[1.0, -1.0, 1.0]), ValueError, 'class_weight'),
    (dict(label_smoothing=1.0), ValueError, 'label_smoothing'),
    (dict(stabilizer='magic'), ValueError, 'stabilizer'),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0, 1]), **kwargs)


def test_bad_labels_and_shapes():
    with pytest.raises(ValueError, match='class indices'):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='shape'):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match='integer'):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match='C >= 2'):
        softmax_focal_loss(torch.zeros(2, 1), torch.tensor([0, 0]))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
@pytest.mark.parametrize('offset', [1e3, -3e3, 4223.485, 1e4, -1e4])
def test_large_logits_keep_full_relative_precision(offset, gamma, dtype):
    """Logits of size 1e3-1e4 whose differences are O(1) (a softmax far from saturating):
    the loss is O(1) and must keep its digits. Forming the margin as ``x - (log(rest) + m)``
    rounds to the spacing of m (1e-4 relative at 4e3: issue 28)."""
    torch.manual_seed(3)
    spread = torch.randn(6, 7, dtype=torch.float64) * 2
    spread[0] = 0.0  # all logits equal: the loss is log 7 at gamma 0
    x = (offset + spread).to(dtype)
    y = torch.tensor([4, 0, 1, 2, 3, 6])
    loss = softmax_focal_loss(x, y, gamma=gamma, reduction='none')
    for i in range(6):
        ref, _ = softmax_focal_row(x[i].tolist(), int(y[i]), gamma)
        assert loss[i].item() == pytest.approx(ref, rel=1e-6), (i, loss[i].item(), ref)
    if gamma == 0.0:
        assert loss[0].item() == pytest.approx(math.log(7), rel=1e-6)
