"""Unified focal loss: the paper's formula in float64, perfect overlap, saturated pixels."""
import pytest
import torch
from conftest import DTYPES, loss_and_grad
from reference import (
    authors_focal,
    authors_focal_tversky,
    authors_unified_focal,
    keras_binary_inputs,
)

from focal_plugin.functional import asymmetric_focal_loss, focal_tversky_loss, unified_focal_loss
from focal_plugin.losses import StableFocalTverskyLoss, UnifiedFocalLoss


def paper_ufl(logits, labels, weight=0.5, delta=0.6, gamma=0.5, symmetric=False, smooth=1e-7):
    """Yeung et al. 2022 written directly from the paper in float64 (no clipping: only valid
    at moderate logits, which is where we compare)."""
    x = logits.double()
    p = torch.softmax(x, 1) if x.shape[1] > 1 else torch.cat([1 - x.sigmoid(), x.sigmoid()], 1)
    y = torch.nn.functional.one_hot(labels, p.shape[1]).movedim(-1, 1).double()
    ce = -y * torch.log(p)
    back = (1 - delta) * (1 - p[:, 0]) ** gamma * ce[:, 0]
    fore = delta * ce[:, 1:].sum(1) if not symmetric else \
        delta * ((1 - p[:, 1:]) ** gamma * ce[:, 1:]).sum(1)
    focal = (back + fore).mean()
    dims = tuple(range(2, x.ndim))
    tp, fn, fp = (y * p).sum(dims), (y * (1 - p)).sum(dims), ((1 - y) * p).sum(dims)
    ti = (tp + smooth) / (tp + delta * fn + (1 - delta) * fp + smooth)
    ftl = (1 - ti) ** (1 - gamma)
    if not symmetric:
        ftl[:, 0] = 1 - ti[:, 0]
    return weight * ftl.mean() + (1 - weight) * focal


def _issue_28_example(dtype=torch.float64):
    """Two images, logits all -16; the second has a 3x3 foreground blob at +3 (the first has
    no foreground at all, common in segmentation: there the smoothing decides the loss)."""
    x = torch.full((2, 1, 8, 8), -16.0, dtype=dtype)
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    x[1, 0, 2:5, 3:6] = 3.0
    y[1, 2:5, 3:6] = 1
    return x, y


@pytest.mark.parametrize('dtype, rel', [(torch.float64, 1e-12), (torch.float32, 1e-5)],
                         ids=str)
def test_defaults_equal_the_authors_code_on_an_image_without_foreground(dtype, rel):
    x, y = _issue_28_example(dtype)
    want = authors_unified_focal(*keras_binary_inputs(x, y))  # weight .5, delta .6, gamma .5
    assert UnifiedFocalLoss()(x, y).item() == pytest.approx(want, rel=rel)
    assert unified_focal_loss(x, y).item() == pytest.approx(want, rel=rel)
    ftl = authors_focal_tversky(*keras_binary_inputs(x, y), 0.6, 0.5, False)
    assert StableFocalTverskyLoss()(x, y).item() == pytest.approx(ftl, rel=rel)
    assert focal_tversky_loss(x, y).item() == pytest.approx(ftl, rel=rel)
    # the smoothing is what decides it: the former default (1e-6) is 10 % off here
    assert UnifiedFocalLoss(smooth=1e-6)(x, y).item() == pytest.approx(0.130399, abs=1e-6)
    assert want == pytest.approx(0.145586, abs=1e-6)


@pytest.mark.parametrize('variant', ['asymmetric', 'symmetric'])
@pytest.mark.parametrize('weight, delta, gamma', [(0.5, 0.6, 0.5), (0.3, 0.7, 0.1),
                                                  (0.8, 0.4, 0.9), (0.5, 0.6, 0.0)])
def test_equals_the_authors_binary_losses(variant, weight, delta, gamma):
    """Random images, some without foreground, logits within +-15 (where the authors' clip to
    [1e-7, 1 - 1e-7] does not act): both components and the sum agree to float64 rounding."""
    torch.manual_seed(4)
    x = (torch.randn(4, 1, 12, 12, dtype=torch.float64) * 5).clamp(-15, 15)
    y = (torch.rand(4, 12, 12) < 0.2).long()
    y[0] = 0
    y[2] = 0
    symmetric = variant == 'symmetric'
    keras = keras_binary_inputs(x, y)
    kw = dict(delta=delta, gamma=gamma, variant=variant)
    assert unified_focal_loss(x, y, weight=weight, **kw).item() == pytest.approx(
        authors_unified_focal(*keras, weight, delta, gamma, symmetric), rel=1e-12)
    assert asymmetric_focal_loss(x, y, **kw).item() == pytest.approx(
        authors_focal(*keras, delta, gamma, symmetric), rel=1e-12)
    assert focal_tversky_loss(x, y, **kw).item() == pytest.approx(
        authors_focal_tversky(*keras, delta, gamma, symmetric), rel=1e-12)


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('variant', ['asymmetric', 'symmetric'])
@pytest.mark.parametrize('gamma', [0.1, 0.5, 0.9])
def test_matches_the_paper_formula(channels, variant, gamma):
    torch.manual_seed(0)
    x = torch.randn(2, channels, 8, 8, dtype=torch.float64) * 2
    y = torch.randint(0, max(channels, 2), (2, 8, 8))
    ours, grad = loss_and_grad(unified_focal_loss, x, y, gamma=gamma, variant=variant)
    ref, ref_grad = loss_and_grad(paper_ufl, x, y, gamma=gamma,
                                  symmetric=variant == 'symmetric')
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-12)


def test_one_channel_sigmoid_equals_two_channel_softmax():
    torch.manual_seed(1)
    x = torch.randn(2, 1, 6, 6)
    y = torch.randint(0, 2, (2, 6, 6))
    two = torch.cat([torch.zeros_like(x), x], 1)  # softmax(0, x) == (sigmoid(-x), sigmoid(x))
    torch.testing.assert_close(unified_focal_loss(x, y), unified_focal_loss(two, y))


@pytest.mark.parametrize('stabilizer', ['exact', 'epsilon'])
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('gamma', [0.01, 0.1, 0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize('scale', [20.0, 100.0, 1e4])
@pytest.mark.parametrize('channels', [1, 3])
def test_finite_at_perfect_overlap_and_saturation(stabilizer, dtype, gamma, scale, channels):
    """Confident, correct logits everywhere: TI -> 1 and every pixel saturated."""
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, 2:5, 2:6] = 1
    if channels == 1:
        x = ((2 * y - 1).float() * scale).unsqueeze(1)
    else:
        x = torch.nn.functional.one_hot(y, 3).movedim(-1, 1).float() * scale
    for fn in (unified_focal_loss, asymmetric_focal_loss, focal_tversky_loss):
        loss, grad = loss_and_grad(fn, x.to(dtype), y, gamma=gamma, stabilizer=stabilizer)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), fn.__name__


@pytest.mark.parametrize('gamma', [0.1, 0.5])
def test_none_mode_fails_where_exact_does_not(gamma):
    y = torch.zeros(1, 4, 4, dtype=torch.long)
    y[:, :2] = 1
    x = ((2 * y - 1).float() * 100).unsqueeze(1)
    _, grad = loss_and_grad(unified_focal_loss, x, y, gamma=gamma, stabilizer='none')
    assert not torch.isfinite(grad).all()
    loss, grad = loss_and_grad(unified_focal_loss, x, y, gamma=gamma)
    assert torch.isfinite(grad).all() and loss < 1e-6


def test_ignore_index_removes_pixels():
    torch.manual_seed(2)
    x = torch.randn(1, 1, 4, 4)
    y = torch.randint(0, 2, (1, 4, 4))
    y_ignored = y.clone()
    y_ignored[0, 0] = 255
    x_changed = x.clone()
    x_changed[0, 0, 0] = 50.0  # whatever the ignored pixels predict does not matter
    torch.testing.assert_close(unified_focal_loss(x, y_ignored),
                               unified_focal_loss(x_changed, y_ignored))
    assert not torch.allclose(unified_focal_loss(x, y), unified_focal_loss(x_changed, y))


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(gamma=1.5), ValueError, 'gamma'),
    (dict(delta=-0.1), ValueError, 'delta'),
    (dict(weight=2.0), ValueError, 'weight'),
    (dict(variant='other'), ValueError, 'variant'),
    (dict(stabilizer='x'), ValueError, 'stabilizer'),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        unified_focal_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long),
                           **kwargs)


def test_bad_targets():
    with pytest.raises(ValueError, match='class indices'):
        unified_focal_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match='shape'):
        unified_focal_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match='integer'):
        unified_focal_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2))
