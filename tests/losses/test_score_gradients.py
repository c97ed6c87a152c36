"""Score targets that require grad through the mmdet-contract modules (a custom head that
forgets to detach its IoU; distillation): QFL with mmdet's tuple target and with a dense one,
VFL with dense scores. The gradient to the scores equals the mpmath reference (float64) and,
where mmdet is installed, mmdet's own modules wherever theirs is finite."""
import pytest
import torch
from reference import map_elements, quality_target_grad, varifocal_target_grad

from focal_plugin.losses import StableQualityFocalLoss, StableVarifocalLoss

N, C = 6, 4


def case():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(N, C, generator=g, dtype=torch.float64) * 4
    pred[0, 0], pred[1, 1] = -30.0, 25.0  # saturated
    labels = torch.tensor([0, 1, 2, 3, 4, 1])  # 4 = background
    scores = torch.rand(N, generator=g, dtype=torch.float64)
    scores[2] = 1.0
    dense = torch.where(labels.unsqueeze(1) == torch.arange(C), scores.unsqueeze(1), 0.0)
    return pred, labels, scores, dense


def score_grad(loss, pred, target_fn, leaf):
    leaf = leaf.clone().requires_grad_(True)
    out = loss(pred, target_fn(leaf), reduction_override='sum')
    (grad,) = torch.autograd.grad(out, leaf)
    return grad


@pytest.mark.parametrize('form', ['tuple', 'dense'])
def test_qfl_score_gradients(form):
    pred, labels, scores, dense = case()
    loss = StableQualityFocalLoss(beta=0.5)
    if form == 'tuple':
        got = score_grad(loss, pred, lambda s: (labels, s), scores)
        (ref,) = map_elements(quality_target_grad, pred, dense, 0.5)
        want = torch.where(labels.unsqueeze(1) == torch.arange(C), ref, 0.0).sum(1)
    else:
        got = score_grad(loss, pred, lambda d: d, dense)
        (want,) = map_elements(quality_target_grad, pred, dense, 0.5)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-30)


@pytest.mark.parametrize('iou_weighted', [True, False])
def test_vfl_score_gradients(iou_weighted):
    pred, _, _, dense = case()
    got = score_grad(StableVarifocalLoss(gamma=0.5, iou_weighted=iou_weighted), pred,
                     lambda d: d, dense)
    (want,) = map_elements(varifocal_target_grad, pred, dense, 0.75, 0.5, iou_weighted)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-30)


@pytest.mark.parametrize('name', ['qfl', 'vfl'])
def test_same_score_gradients_as_mmdet_where_theirs_are_finite(name):
    pytest.importorskip('mmdet')
    from mmdet.models.losses import QualityFocalLoss, VarifocalLoss
    pred, labels, scores, dense = (v.float() if v.is_floating_point() else v for v in case())
    if name == 'qfl':  # (float32: mmdet's QFL mixes dtypes in float64)
        ours, theirs = StableQualityFocalLoss(beta=2.0), QualityFocalLoss(beta=2.0)
        args = (pred, lambda s: (labels, s), scores)
    else:
        ours, theirs = StableVarifocalLoss(gamma=2.0), VarifocalLoss(gamma=2.0)
        args = (pred, lambda d: d, dense)
    got, want = score_grad(ours, *args), score_grad(theirs, *args)
    assert torch.isfinite(got).all()
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-4, atol=1e-6)
