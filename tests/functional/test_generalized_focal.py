"""QFL / VFL: saturated logits, the cusp sigmoid(x) == score, float64 references."""
import pytest
import torch
from conftest import DTYPES, GAMMAS, SATURATING_LOGITS, loss_and_grad
from reference import map_elements, quality_elem, varifocal_elem

from focal_plugin.functional import quality_focal_loss, varifocal_loss


@pytest.mark.parametrize('stabilizer', ['exact', 'epsilon'])
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('exponent', GAMMAS)
@pytest.mark.parametrize('score', [0.0, 1.0, 0.3, 0.9])
def test_finite_everywhere(stabilizer, dtype, exponent, score):
    x = torch.tensor(SATURATING_LOGITS, dtype=dtype)
    t = torch.full_like(x, score)
    for fn, kwargs in ((quality_focal_loss, dict(beta=exponent)),
                       (varifocal_loss, dict(gamma=exponent))):
        loss, grad = loss_and_grad(fn, x, t, stabilizer=stabilizer, **kwargs)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), fn.__name__


@pytest.mark.parametrize('exponent', [0.1, 0.5, 0.9])
def test_none_reproduces_nan_at_saturated_negatives(exponent):
    x, t = torch.tensor([-200.0]), torch.tensor([0.0])
    _, grad = loss_and_grad(quality_focal_loss, x, t, beta=exponent, stabilizer='none')
    assert torch.isnan(grad).all()
    _, grad = loss_and_grad(varifocal_loss, x, t, gamma=exponent, stabilizer='none')
    assert torch.isnan(grad).all()


@pytest.mark.parametrize('beta', [0.1, 0.5, 0.9, 2.0])
def test_cusp_has_zero_modulating_gradient_exact_mode(beta):
    """At sigmoid(x) == score exactly, 'exact' defines d|y - sigma|^beta/dx as 0; the loss
    gradient there is 0 (the factor is 0, and so is its derivative)."""
    x = torch.tensor([0.0, 0.0])
    t = torch.tensor([0.5, 0.5])  # sigmoid(0) == 0.5 exactly
    loss, grad = loss_and_grad(quality_focal_loss, x, t, beta=beta)
    assert torch.equal(loss, torch.zeros(2)) and torch.equal(grad, torch.zeros(2))
    _, grad = loss_and_grad(quality_focal_loss, x, t, beta=beta, stabilizer='none')
    assert (torch.isnan(grad).all() if beta < 1 else torch.isfinite(grad).all())


@pytest.mark.parametrize('beta', GAMMAS)
@pytest.mark.parametrize('score', [0.0, 1.0, 0.3, 0.77])
def test_qfl_matches_high_precision_reference(beta, score):
    x = torch.linspace(-30, 30, 121)
    t = torch.full_like(x, score)
    ref_loss, ref_grad = map_elements(quality_elem, x, t, beta)
    loss, grad = loss_and_grad(quality_focal_loss, x, t, beta=beta)
    # near the cusp the slope is genuinely steep: compare where it is away from it
    away = (torch.sigmoid(x.double()) - score).abs() > 1e-3
    torch.testing.assert_close(loss.double()[away], ref_loss[away], rtol=2e-5, atol=1e-30)
    torch.testing.assert_close(grad.double()[away], ref_grad[away], rtol=1e-4,
                               atol=1e-6 * ref_grad.abs().max().item())


@pytest.mark.parametrize('gamma', GAMMAS)
@pytest.mark.parametrize('iou_weighted', [True, False])
def test_vfl_matches_high_precision_reference(gamma, iou_weighted):
    x = torch.linspace(-30, 30, 61).repeat(2)
    t = torch.cat([torch.zeros(61), torch.full((61,), 0.7)])
    ref_loss, ref_grad = map_elements(varifocal_elem, x, t, 0.75, gamma, iou_weighted)
    loss, grad = loss_and_grad(varifocal_loss, x, t, alpha=0.75, gamma=gamma,
                               iou_weighted=iou_weighted)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=2e-5, atol=1e-30)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-30)


def test_activated_inputs_take_probabilities():
    p = torch.tensor([0.2, 0.7, 1.0, 0.0])
    t = torch.tensor([0.0, 0.9, 1.0, 0.0])
    logit_loss = quality_focal_loss(torch.logit(p[:2].double()), t[:2].double(), beta=2.0)
    prob_loss = quality_focal_loss(p[:2].double(), t[:2].double(), beta=2.0, activated=True)
    torch.testing.assert_close(prob_loss, logit_loss)
    # saturated probabilities: exact loss 0 with a finite gradient in exact mode
    loss, grad = loss_and_grad(quality_focal_loss, p, t, beta=0.5, activated=True)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize('fn, kwargs, error, match', [
    (quality_focal_loss, dict(beta=-1.0), ValueError, 'beta'),
    (varifocal_loss, dict(gamma=float('nan')), ValueError, 'gamma'),
    (varifocal_loss, dict(alpha=-0.5), ValueError, 'alpha'),  # mmdet: assert alpha >= 0
    (quality_focal_loss, dict(stabilizer='x'), ValueError, 'stabilizer'),
    (quality_focal_loss, dict(eps=-1.0), ValueError, 'eps'),
])
def test_bad_arguments(fn, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(torch.zeros(2, 3), torch.zeros(2, 3), **kwargs)


def test_bad_targets():
    # integer/bool scores are converted, as mmdet does; values outside [0, 1] still fail
    assert torch.equal(quality_focal_loss(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.long)),
                       quality_focal_loss(torch.zeros(2, 3), torch.ones(2, 3)))
    with pytest.raises(ValueError, match='targets must be probabilities'):
        quality_focal_loss(torch.zeros(2, 3), torch.full((2, 3), 2, dtype=torch.long))
    with pytest.raises(ValueError, match='shape'):
        varifocal_loss(torch.zeros(2, 3), torch.zeros(2, 4))
