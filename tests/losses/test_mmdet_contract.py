"""The registered modules against mmdet's own losses, mmdet's loss test cases and mmcv's
golden values, through the real registries."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss, QualityFocalLoss, VarifocalLoss
from mmdet.registry import MODELS

import focal_plugin  # noqa: F401  (registers)
from focal_plugin.losses import (
    StableFocalLoss,
    StableQualityFocalLoss,
    StableSoftmaxFocalLoss,
    StableVarifocalLoss,
    UnifiedFocalLoss,
)

OURS = [StableFocalLoss, StableQualityFocalLoss, StableVarifocalLoss]


# ---- mmdet's tests/test_models/test_losses/test_loss.py, with our classes substituted ----

@pytest.mark.parametrize('loss_class', OURS + [StableSoftmaxFocalLoss])
def test_loss_with_reduction_override(loss_class):
    pred = torch.rand((10, 4))
    target = torch.rand((10, 4)),
    with pytest.raises(AssertionError):
        loss_class()(pred, target, None, reduction_override=True)
    with pytest.raises(ValueError, match='reduction_override'):
        loss_class()(pred, target, None, reduction_override='avg')


@pytest.mark.parametrize('activated', [False, True])
def test_QualityFocalLoss_Loss(activated):
    input_shape = (4, 5)
    pred = torch.rand(input_shape)
    label = torch.Tensor([0, 1, 2, 0]).long()
    quality_label = torch.rand(input_shape[0])
    original_loss = StableQualityFocalLoss(activated=activated)(pred, (label, quality_label))
    assert isinstance(original_loss, torch.Tensor)
    target = torch.nn.functional.one_hot(label, 5)
    target = target * quality_label.reshape(input_shape[0], 1)
    new_loss = StableQualityFocalLoss(activated=activated)(pred, target)
    assert isinstance(new_loss, torch.Tensor)
    assert new_loss == original_loss


@pytest.mark.parametrize('input_shape', [(10, 5), (3, 5, 40, 40)])
def test_FocalLoss_loss(input_shape):
    pred = torch.rand(input_shape)
    target = torch.randint(0, 5, (input_shape[0], ))
    if len(input_shape) == 4:
        B, N, W, H = input_shape
        target = F.one_hot(torch.randint(0, 5, (B * W * H, )),
                           5).reshape(B, W, H, N).permute(0, 3, 1, 2)
    loss_class = StableFocalLoss
    assert isinstance(loss_class()(pred, target), torch.Tensor)
    assert isinstance(loss_class()(pred, target, reduction_override='mean'), torch.Tensor)
    assert isinstance(loss_class()(pred, target, avg_factor=10), torch.Tensor)
    with pytest.raises(ValueError):
        loss_class()(pred, target, avg_factor=10, reduction_override='sum')
    for reduction_override in [None, 'none', 'mean']:
        loss = loss_class()(pred, target, avg_factor=10, reduction_override=reduction_override)
        assert isinstance(loss, torch.Tensor)
    # and the values are mmdet's
    for kwargs in (dict(), dict(avg_factor=10), dict(reduction_override='none')):
        torch.testing.assert_close(loss_class()(pred, target, **kwargs),
                                   FocalLoss()(pred, target, **kwargs), rtol=1e-6, atol=1e-7)


# ---- value parity with mmdet (CPU Python path) where mmdet is finite ----

def mmdet_and_ours(ours, theirs, pred, target, **kwargs):
    a = pred.clone().requires_grad_(True)
    b = pred.clone().requires_grad_(True)
    ours_loss = ours(a, target, **kwargs)
    theirs_loss = theirs(b, target, **kwargs)
    ours_loss.sum().backward()
    theirs_loss.sum().backward()
    return ours_loss, theirs_loss, a.grad, b.grad


@pytest.mark.parametrize('gamma', [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize('alpha', [0.25, 0.5])
@pytest.mark.parametrize('weight_shape', [None, 'N', 'NC', 'N*C'])
def test_focal_matches_mmdet(gamma, alpha, weight_shape):
    torch.manual_seed(0)
    pred = torch.randn(50, 7) * 4  # |logit| < 16: mmdet is finite and accurate here
    labels = torch.randint(0, 8, (50,))  # 7 == background
    weight = {None: None, 'N': torch.rand(50), 'NC': torch.rand(50, 7),
              'N*C': torch.rand(350)}[weight_shape]
    for kwargs in (dict(weight=weight), dict(weight=weight, avg_factor=13.0),
                   dict(weight=weight, reduction_override='sum'),
                   dict(weight=weight, reduction_override='none')):
        ours, theirs, g_ours, g_theirs = mmdet_and_ours(
            StableFocalLoss(gamma=gamma, alpha=alpha, loss_weight=2.0),
            FocalLoss(gamma=gamma, alpha=alpha, loss_weight=2.0), pred, labels, **kwargs)
        # mmdet's BCE-with-logits rounds log(1 + e^-|x|) (absolute error ~1e-7)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=2e-7)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=2e-7)


def test_mmcv_golden_values():
    """mmcv's tests/test_ops/test_focal_loss.py: x=[[1,0],[0,1]], t=[0,1], gamma=2,
    alpha=0.25, loss (summed / N as the mmcv kernel's 'mean') 0.13562961."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    t = torch.tensor([0, 1])
    loss = StableFocalLoss(gamma=2.0, alpha=0.25, reduction='sum')(x, t) / x.shape[0]
    loss.backward()
    assert loss.item() == pytest.approx(0.13562961, rel=1e-6)
    expected_grad = torch.tensor([[-0.00657264, 0.11185755], [0.11185755, -0.00657264]])
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('beta', [0.5, 2.0])
@pytest.mark.parametrize('activated', [False, True])
def test_qfl_matches_mmdet(beta, activated):
    torch.manual_seed(0)
    pred = torch.rand(30, 6) if activated else torch.randn(30, 6) * 4
    labels = torch.randint(0, 7, (30,))
    scores = torch.rand(30)
    weight = torch.rand(30)
    for target in ((labels, scores),
                   F.one_hot(labels, 7)[:, :6] * scores[:, None]):
        ours, theirs, g_ours, g_theirs = mmdet_and_ours(
            StableQualityFocalLoss(beta=beta, activated=activated),
            QualityFocalLoss(beta=beta, activated=activated), pred, target, weight=weight,
            avg_factor=7.0)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=2e-7)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=2e-7)


@pytest.mark.parametrize('gamma', [0.5, 2.0])
@pytest.mark.parametrize('iou_weighted', [True, False])
def test_vfl_matches_mmdet(gamma, iou_weighted):
    torch.manual_seed(0)
    pred = torch.randn(30, 6) * 4
    target = torch.rand(30, 6) * (torch.rand(30, 6) < 0.2)
    ours, theirs, g_ours, g_theirs = mmdet_and_ours(
        StableVarifocalLoss(gamma=gamma, iou_weighted=iou_weighted),
        VarifocalLoss(gamma=gamma, iou_weighted=iou_weighted), pred, target)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=2e-7)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=2e-7)


# ---- where mmdet fails and we do not ----

@pytest.mark.parametrize('loss_cfg', [
    dict(type='FocalLoss', gamma=0.5),
    dict(type='QualityFocalLoss', beta=0.5),
    dict(type='VarifocalLoss', gamma=0.5),
])
def test_saturated_logits_nan_in_mmdet_finite_in_ours(loss_cfg):
    pred = torch.tensor([[100.0, -100.0, -1e4], [-100.0, 40.0, -20.0]])
    labels = torch.tensor([0, 1])
    if loss_cfg['type'] == 'FocalLoss':
        target = labels
    elif loss_cfg['type'] == 'QualityFocalLoss':
        target = (labels, torch.ones(2))
    else:
        target = F.one_hot(labels, 3).float()
    grads = {}
    for name in (loss_cfg['type'], 'Stable' + loss_cfg['type']):
        x = pred.clone().requires_grad_(True)
        # scope-qualified: earlier Runner tests may leave another default scope current
        MODELS.build(dict(loss_cfg, type=f'mmdet.{name}'))(x, target).backward()
        grads[name] = x.grad
    assert not torch.isfinite(grads[loss_cfg['type']]).all()
    assert torch.isfinite(grads['Stable' + loss_cfg['type']]).all()


# ---- contract details ----

def test_weight_shape_errors_name_weight():
    with pytest.raises(ValueError, match='weight'):
        StableFocalLoss()(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), torch.ones(5))


def test_index_labels_out_of_range():
    with pytest.raises(ValueError, match=r'\[0, 3\]'):
        StableFocalLoss()(torch.zeros(2, 3), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r'\[0, 3\]'):
        StableFocalLoss()(torch.zeros(2, 3), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match='labels'):
        StableQualityFocalLoss()(torch.zeros(2, 3), (torch.tensor([0, 5]), torch.ones(2)))


def test_integer_predictions_are_rejected():
    with pytest.raises(TypeError, match='floating point'):
        StableFocalLoss()(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1]))


@pytest.mark.parametrize('loss', [StableFocalLoss(gamma=0.5), StableQualityFocalLoss(beta=0.5),
                                  StableVarifocalLoss(gamma=0.5),
                                  StableSoftmaxFocalLoss(gamma=0.5)])
def test_zero_anchors_give_zero_loss_and_grad(loss):
    pred = torch.zeros(0, 80, requires_grad=True)
    if isinstance(loss, StableQualityFocalLoss):
        target = (torch.zeros(0, dtype=torch.long), torch.zeros(0))
    elif isinstance(loss, StableVarifocalLoss):
        target = torch.zeros(0, 80)
    else:
        target = torch.zeros(0, dtype=torch.long)
    out = loss(pred, target)
    out.backward()
    assert out.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


@pytest.mark.parametrize('cls, kwargs, error, match', [
    (StableFocalLoss, dict(gamma=-1), ValueError, 'gamma'),
    (StableFocalLoss, dict(alpha=2.0), ValueError, 'alpha'),
    (StableFocalLoss, dict(eps=-1.0), ValueError, 'eps'),
    (StableFocalLoss, dict(stabilizer='clip'), ValueError, 'stabilizer'),
    (StableFocalLoss, dict(reduction='avg'), ValueError, 'reduction'),
    (StableFocalLoss, dict(use_sigmoid=False), ValueError, 'use_sigmoid'),
    (StableFocalLoss, dict(loss_weight='1'), TypeError, 'loss_weight'),
    (StableQualityFocalLoss, dict(beta=float('nan')), ValueError, 'beta'),
    (StableVarifocalLoss, dict(alpha=-1), ValueError, 'alpha'),
    (StableSoftmaxFocalLoss, dict(label_smoothing=1.5), ValueError, 'label_smoothing'),
    (UnifiedFocalLoss, dict(gamma=2.0), ValueError, 'gamma'),
    (UnifiedFocalLoss, dict(variant='x'), ValueError, 'variant'),
])
def test_constructor_validation(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_unknown_constructor_option_fails_at_build():
    with pytest.raises(TypeError, match='gama'):
        MODELS.build(dict(type='StableFocalLoss', gama=0.5))


def test_where_mmdets_python_focal_loss_breaks():
    """README's claim: mmdet's py_sigmoid_focal_loss (its CPU path) uses p directly for
    negatives, so they only break where sigmoid underflows (x <= -88.73); positives break
    where sigmoid rounds to 1 (x >= 16.64), as in torchvision's form."""
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    x = torch.tensor([[-88.72], [-88.74], [16.62], [16.66]], requires_grad=True)
    t = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    py_sigmoid_focal_loss(x, t, gamma=0.5, alpha=0.25, reduction='sum').backward()
    finite = torch.isfinite(x.grad).flatten().tolist()
    assert finite == [True, False, True, False]
