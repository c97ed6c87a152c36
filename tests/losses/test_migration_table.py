"""docs/losses.md "Coming from another library": one test per row of the migration table.

Each test calls the other library's loss (or, where it cannot run here, an independent port of
its arithmetic in ``tests/reference.py``) and the focal_plugin call the table gives, at logits
where the other library is itself accurate, and asserts the agreement the table states.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import AsymmetricUnifiedFocalLoss
from monai.losses import FocalLoss as MonaiFocalLoss
from reference import (
    authors_focal,
    authors_focal_tversky,
    authors_unified_focal,
    keras_binary_inputs,
    mmcv_sigmoid_focal,
    mmcv_softmax_focal,
)
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from focal_plugin.functional import (
    asymmetric_focal_loss,
    focal_tversky_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)
from focal_plugin.losses import (
    StableAsymmetricFocalLoss,
    StableFocalLoss,
    StableFocalTverskyLoss,
    StableQualityFocalLoss,
    StableVarifocalLoss,
    UnifiedFocalLoss,
)

torch.set_num_threads(1)
RTOL = 1e-6  # float32 inputs: both sides round differently, nothing more


def _logits(*shape, seed=0, scale=3.0, dtype=torch.float32):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('alpha, gamma', [(0.25, 2.0), (-1, 0.5), (0.75, 0.0)])
def test_row_torchvision_sigmoid_focal_loss(alpha, gamma, reduction):
    x = _logits(64, 5)
    t = (torch.rand(64, 5, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha, gamma, reduction),
                               tv_sigmoid_focal_loss(x, t, alpha, gamma, reduction),
                               rtol=RTOL, atol=1e-7)


def _mmdet(name, **kwargs):
    from mmdet.registry import MODELS
    return MODELS.build(dict(type=name, **kwargs))


@pytest.mark.parametrize('gamma, alpha', [(2.0, 0.25), (1.5, 0.5)])
def test_row_mmdet_focal_loss(gamma, alpha):
    """Index labels with background = C, per-anchor weights, avg_factor."""
    x = _logits(50, 4)
    labels = torch.randint(0, 5, (50,), generator=torch.Generator().manual_seed(2))
    w = torch.rand(50, generator=torch.Generator().manual_seed(3))
    kw = dict(use_sigmoid=True, gamma=gamma, alpha=alpha, loss_weight=2.0)
    ours = StableFocalLoss(**kw)(x, labels, weight=w[:, None].expand(50, 4), avg_factor=7.0)
    theirs = _mmdet('mmdet.FocalLoss', **kw)(x, labels, weight=w[:, None].expand(50, 4),
                                              avg_factor=7.0)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=0)


@pytest.mark.parametrize('beta', [2.0, 1.0])
def test_row_mmdet_quality_focal_loss(beta):
    x = _logits(40, 3)
    labels = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(4))
    scores = torch.rand(40, generator=torch.Generator().manual_seed(5))
    kw = dict(use_sigmoid=True, beta=beta)
    torch.testing.assert_close(StableQualityFocalLoss(**kw)(x, (labels, scores)),
                               _mmdet('mmdet.QualityFocalLoss', **kw)(x, (labels, scores)),
                               rtol=RTOL, atol=0)


@pytest.mark.parametrize('iou_weighted', [True, False])
def test_row_mmdet_varifocal_loss(iou_weighted):
    x = _logits(40, 3)
    target = torch.rand(40, 3, generator=torch.Generator().manual_seed(6))
    target[target < 0.6] = 0
    kw = dict(use_sigmoid=True, alpha=0.75, gamma=2.0, iou_weighted=iou_weighted)
    torch.testing.assert_close(StableVarifocalLoss(**kw)(x, target),
                               _mmdet('mmdet.VarifocalLoss', **kw)(x, target),
                               rtol=RTOL, atol=0)


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
def test_row_mmcv_sigmoid_focal_loss(reduction):
    """mmcv's op (CUDA only; a port of its kernel here): index labels, C = background, and
    'mean' = sum / N rows, i.e. our 'sum' divided by N."""
    x = _logits(30, 4, dtype=torch.float64)
    labels = torch.randint(0, 5, (30,), generator=torch.Generator().manual_seed(7))
    onehot = F.one_hot(labels, 5)[:, :4].to(x.dtype)
    ours = sigmoid_focal_loss(x, onehot, 0.25, 2.0, 'none' if reduction == 'none' else 'sum')
    if reduction == 'mean':
        ours = ours / x.shape[0]
    want = mmcv_sigmoid_focal(x.numpy(), labels.numpy(), 2.0, 0.25, reduction=reduction)
    np.testing.assert_allclose(ours.numpy(), want, rtol=1e-12)
    if torch.cuda.is_available():  # the real op, where it exists
        from mmcv.ops import sigmoid_focal_loss as mmcv_op
        got = mmcv_op(x.float().cuda(), labels.cuda(), 2.0, 0.25, None, reduction)
        np.testing.assert_allclose(got.cpu().double().numpy(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
def test_row_mmcv_softmax_focal_loss(reduction):
    """mmcv's alpha is one scalar for every class and its weight is per class: our
    ``alpha=a, class_weight=weight``; 'mean' = sum / N rows."""
    x = _logits(30, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (30,), generator=torch.Generator().manual_seed(8))
    weight = [1.0, 2.0, 0.5, 1.5]
    ours = softmax_focal_loss(x, labels, alpha=0.25, gamma=2.0, class_weight=weight,
                              reduction='none' if reduction == 'none' else 'sum')
    if reduction == 'mean':
        ours = ours / x.shape[0]
    want = mmcv_softmax_focal(x.numpy(), labels.numpy(), 2.0, 0.25, weight, reduction)
    np.testing.assert_allclose(ours.numpy(), want, rtol=1e-12)
    if torch.cuda.is_available():
        from mmcv.ops import softmax_focal_loss as mmcv_op
        got = mmcv_op(x.float().cuda(), labels.cuda(), 2.0, 0.25,
                      torch.tensor(weight).cuda(), reduction)
        np.testing.assert_allclose(got.cpu().double().numpy(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('alpha', [0.25, None])
def test_row_monai_focal_loss_sigmoid(alpha):
    """MONAI FocalLoss (default use_softmax=False): logits and one-hot (B, C, H, W) targets,
    alpha as torchvision's, 'mean' over every element: our sigmoid_focal_loss(..., 'mean')."""
    x = _logits(2, 3, 6, 6)
    y = F.one_hot(torch.randint(0, 3, (2, 6, 6), generator=torch.Generator().manual_seed(9)),
                  3).movedim(-1, 1).float()
    want = MonaiFocalLoss(gamma=2.0, alpha=alpha)(x, y)
    torch.testing.assert_close(sigmoid_focal_loss(x, y, alpha, 2.0, 'mean'), want,
                               rtol=RTOL, atol=0)


def test_row_monai_focal_loss_softmax():
    """use_softmax=True: a scalar alpha is (1 - alpha) for class 0 and alpha for the others,
    and 'mean' averages over B x C x H x W: our mean over B x H x W divided by C."""
    x = _logits(2, 3, 6, 6)
    y = torch.randint(0, 3, (2, 1, 6, 6), generator=torch.Generator().manual_seed(10))
    want = MonaiFocalLoss(gamma=2.0, alpha=0.25, use_softmax=True, to_onehot_y=True)(x, y)
    ours = softmax_focal_loss(x, y[:, 0], alpha=[0.75, 0.25, 0.25], gamma=2.0) / 3
    torch.testing.assert_close(ours, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize('weight, delta, gamma', [(0.5, 0.7, 0.5), (0.3, 0.6, 0.2)])
def test_row_monai_asymmetric_unified_focal_loss(weight, delta, gamma):
    """MONAI takes probabilities (its docstring says logits), puts ``weight`` on the focal
    term (the authors put lambda on the Tversky term) and averages the focal term over
    B x 2 x H x W (half the authors' value): MONAI(weight=w) ==
    (1 - w) * focal_tversky + (w / 2) * asymmetric_focal, on the logits."""
    x = _logits(2, 1, 8, 8, dtype=torch.float64)
    y = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(11)) < 0.3).long()
    want = AsymmetricUnifiedFocalLoss(weight=weight, delta=delta, gamma=gamma)(
        torch.sigmoid(x), y)
    kw = dict(delta=delta, gamma=gamma)
    ours = ((1 - weight) * focal_tversky_loss(x, y[:, 0], **kw)
            + weight / 2 * asymmetric_focal_loss(x, y[:, 0], **kw))
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=0)
    # and the naive reading (same weight, same call) is what differs
    assert abs(UnifiedFocalLoss(weight=weight, **kw)(x, y).item() - want.item()) > 1e-3


@pytest.mark.parametrize('symmetric', [False, True])
def test_row_authors_keras_losses(symmetric):
    """The authors' Keras functions at their own defaults (unified 0.5/0.6/0.5; focal
    delta 0.7, gamma 2; focal Tversky delta 0.7, gamma 0.75), softmax probabilities
    channels-last: our modules on (N, 1, H, W) logits, channels first."""
    x = _logits(3, 1, 10, 10, dtype=torch.float64)
    y = (torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(12)) < 0.2).long()
    y[0] = 0  # one image without foreground
    keras = keras_binary_inputs(x, y)
    variant = 'symmetric' if symmetric else 'asymmetric'
    assert UnifiedFocalLoss(variant=variant)(x, y).item() == pytest.approx(
        authors_unified_focal(*keras, symmetric=symmetric), rel=1e-12)
    assert StableAsymmetricFocalLoss(variant=variant, delta=0.7, gamma=2.0)(x, y).item() == \
        pytest.approx(authors_focal(*keras, 0.7, 2.0, symmetric), rel=1e-12)
    assert StableFocalTverskyLoss(variant=variant, delta=0.7, gamma=0.75)(x, y).item() == \
        pytest.approx(authors_focal_tversky(*keras, 0.7, 0.75, symmetric), rel=1e-12)
