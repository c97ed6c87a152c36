"""Sigmoid focal loss: stability at the hard points, float64 references, torchvision parity."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import DTYPES, GAMMAS, SATURATING_LOGITS, loss_and_grad
from reference import focal_elem, map_elements
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from focal_plugin.functional import sigmoid_focal_loss

grad_of = partial(loss_and_grad, sigmoid_focal_loss)  # (loss, d loss.sum() / d x)

TARGETS = {'negative': 0.0, 'positive': 1.0, 'soft': 0.3}



@pytest.mark.parametrize('stabilizer', ['exact', 'epsilon'])
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('gamma', GAMMAS)
@pytest.mark.parametrize('target', TARGETS.values(), ids=TARGETS.keys())
def test_finite_everywhere(stabilizer, dtype, gamma, target):
    x = torch.tensor(SATURATING_LOGITS, dtype=dtype)
    t = torch.full_like(x, target)
    loss, grad = grad_of(x, t, alpha=0.25, gamma=gamma, stabilizer=stabilizer)
    assert torch.isfinite(loss).all(), loss
    assert torch.isfinite(grad).all(), grad
    assert grad.dtype == dtype


@pytest.mark.parametrize('gamma', [0.01, 0.1, 0.5, 0.9])
@pytest.mark.parametrize('x, target', [(20.0, 1.0), (-20.0, 0.0), (100.0, 1.0),
                                       (-1e4, 0.0)])
def test_none_reproduces_the_published_nan(gamma, x, target):
    _, grad = grad_of(torch.tensor([x]), torch.tensor([target]), gamma=gamma,
                            stabilizer='none')
    assert torch.isnan(grad).all()
    _, grad = grad_of(torch.tensor([x]), torch.tensor([target]), gamma=gamma,
                            stabilizer='exact')
    assert torch.isfinite(grad).all()


def test_where_the_original_form_breaks_in_float32():
    """Measured float32 break points of torchvision's form (documented in the README):
    a positive fails once sigmoid(x) rounds to 1 (x > 16.64, 1 + e^-x == 1); a negative once
    1 - (1 - p) rounds to 0 (x < -17.33). mmdet's Python form uses p directly for negatives
    and only fails where sigmoid underflows."""
    x = torch.tensor([16.62, 16.66, -17.32, -17.34])
    t = torch.tensor([1.0, 1.0, 0.0, 0.0])
    _, grad = grad_of(x, t, gamma=0.5, stabilizer='none')
    assert torch.isfinite(grad[[0, 2]]).all() and torch.isnan(grad[[1, 3]]).all()


@pytest.mark.parametrize('gamma', GAMMAS)
@pytest.mark.parametrize('target', [0.0, 1.0, 0.3, 0.9, 1e-3])
@pytest.mark.parametrize('alpha', [0.25, None])
def test_exact_matches_high_precision_reference(gamma, target, alpha):
    x = torch.linspace(-30, 30, 61)
    t = torch.full_like(x, target)
    ref_loss, ref_grad, grad_scale = map_elements(focal_elem, x, t, gamma, alpha)
    loss, grad = grad_of(x, t, alpha=alpha, gamma=gamma)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-30)
    # rtol 1e-5 of the gradient, measured against the sum of the magnitudes of its two terms
    # (for soft targets they can cancel; no float32 evaluation does better there)
    assert ((grad.double() - ref_grad).abs() <= 1e-5 * grad_scale + 1e-30).all()
    well_conditioned = ref_grad.abs() > 0.1 * grad_scale
    torch.testing.assert_close(grad.double()[well_conditioned], ref_grad[well_conditioned],
                               rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize('gamma', GAMMAS)
def test_exact_float64_at_saturation_matches_reference(gamma):
    x = torch.tensor([-100.0, -40.0, 40.0, 100.0], dtype=torch.float64)
    for target in (0.0, 1.0):
        t = torch.full_like(x, target)
        ref_loss, ref_grad, _ = map_elements(focal_elem, x, t, gamma, 0.25)
        loss, grad = grad_of(x, t, alpha=0.25, gamma=gamma)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-7, atol=0)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=0)


def test_hard_integer_targets_take_the_same_values_as_float_targets():
    x = torch.randn(64, 5) * 30
    t = torch.randint(0, 2, (64, 5))
    for gamma in (0.3, 2.0):
        hard_loss, hard_grad = grad_of(x, t, gamma=gamma)
        soft_loss, soft_grad = grad_of(x, t.float(), gamma=gamma)
        torch.testing.assert_close(hard_loss, soft_loss, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(hard_grad, soft_grad, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize('gamma', GAMMAS + [0.0, 3.0])
@pytest.mark.parametrize('alpha', [0.25, 0.5, -1])
def test_exact_equals_torchvision_where_torchvision_is_finite(gamma, alpha):
    """Equal to 1e-6 relative, plus torchvision's own float32 error (measured against the
    50-digit reference): its BCE-with-logits rounds log(1 + e^-|x|) and its 1 - (1 - p) rounds
    to 0 at confident logits, where 'exact' keeps the true value."""
    torch.manual_seed(0)
    x = torch.cat([torch.randn(400) * 8, torch.tensor(SATURATING_LOGITS)])
    t = (torch.rand_like(x) < 0.3).float()
    ours = sigmoid_focal_loss(x, t, alpha, gamma).double()
    theirs = tv_sigmoid_focal_loss(x, t, alpha, gamma).double()
    ref = map_elements(focal_elem, x, t, gamma, None if alpha == -1 else alpha)[0]
    finite = torch.isfinite(theirs)
    assert finite.sum() > 400
    their_error = (theirs - ref).abs()
    allowed = 1e-6 * theirs.abs() + 1e-12 + their_error
    assert ((ours - theirs).abs() <= allowed)[finite].all()
    # where torchvision is itself accurate, the two agree to 1e-6 relative
    accurate = finite & (their_error <= 1e-7 * ref.abs())
    assert accurate.sum() > 50
    torch.testing.assert_close(ours[accurate], theirs[accurate], rtol=1e-6, atol=1e-12)
    # float32 exp(gamma * log m) carries ~gamma * |log m| ulps: a few 1e-6 at most here
    assert (ours - ref).abs().le(5e-6 * ref.abs() + 1e-37).all()  # 1e-37: float32 underflow


def torchvision_with_eps(x, t, alpha, gamma, eps):
    """torchvision's sigmoid_focal_loss with the published eps in the modulating factor."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction='none')
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t + eps) ** gamma)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * loss


@pytest.mark.parametrize('gamma', [0.1, 0.5, 2.0])
@pytest.mark.parametrize('eps', [1e-3, 1e-2])
def test_epsilon_mode_is_the_published_formula(gamma, eps):
    x = torch.cat([torch.randn(200) * 10, torch.tensor(SATURATING_LOGITS)])
    t = (torch.rand_like(x) < 0.5).float()
    x_ours = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    ours = sigmoid_focal_loss(x_ours, t, 0.25, gamma, stabilizer='epsilon', eps=eps)
    ref = torchvision_with_eps(x_ref, t, 0.25, gamma, eps)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=0, atol=0)


def test_none_mode_is_torchvision_bit_for_bit():
    x = torch.cat([torch.randn(200) * 10, torch.tensor(SATURATING_LOGITS)])
    t = torch.rand_like(x)
    for gamma in (0.5, 2.0):
        torch.testing.assert_close(sigmoid_focal_loss(x, t, 0.25, gamma, stabilizer='none'),
                                   tv_sigmoid_focal_loss(x, t, 0.25, gamma), rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_computes_in_float32(dtype):
    x = (torch.randn(100) * 20).to(dtype)
    t = (torch.rand(100) < 0.5).to(dtype)
    loss, grad = grad_of(x, t, gamma=0.5)
    assert loss.dtype == torch.float32
    ref_loss, ref_grad = grad_of(x.float(), t.float(), gamma=0.5)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad.float(), ref_grad.to(dtype).float())


def test_empty_input_gives_zero_loss_and_zero_grad():
    x = torch.zeros(0, 80, requires_grad=True)
    for reduction in ('mean', 'sum'):
        loss = sigmoid_focal_loss(x, torch.zeros(0, 80), reduction=reduction)
        loss.backward()
        assert loss.item() == 0.0 and x.grad.shape == x.shape


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(gamma=-0.1), ValueError, 'gamma'),
    (dict(gamma=float('nan')), ValueError, 'gamma'),
    (dict(gamma=float('inf')), ValueError, 'gamma'),
    (dict(gamma='2'), TypeError, 'gamma'),
    (dict(alpha=1.5), ValueError, 'alpha'),
    (dict(alpha=-0.5), ValueError, 'alpha'),
    (dict(eps=-1e-3), ValueError, 'eps'),
    (dict(stabilizer='clip'), ValueError, 'stabilizer'),
    (dict(reduction='avg'), ValueError, 'reduction'),
])
def test_bad_arguments_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), **kwargs)


def test_bad_tensors_are_rejected():
    with pytest.raises(ValueError, match='shape'):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match='floating point'):
        sigmoid_focal_loss(torch.zeros(3, dtype=torch.long), torch.zeros(3))
    with pytest.raises(ValueError, match='hard labels'):
        sigmoid_focal_loss(torch.zeros(3), torch.tensor([0, 1, 2]))


def test_torch_compile_matches_eager():
    compiled = torch.compile(sigmoid_focal_loss, dynamic=True)
    x = torch.tensor(SATURATING_LOGITS, requires_grad=True)
    t = (torch.arange(len(SATURATING_LOGITS)) % 2).float()
    eager = sigmoid_focal_loss(x, t, 0.25, 0.5, 'sum')
    (eager_grad,) = torch.autograd.grad(eager, x)
    out = compiled(x, t, 0.25, 0.5, 'sum')
    (grad,) = torch.autograd.grad(out, x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(grad).all()
