"""The call shapes of mmdet's mask heads, MMSegmentation's decode heads and MMPretrain's heads
(issue 33), each checked against an independent reference over generated inputs.

Classes covered: (1) a mask head's ``(mask_pred (n, C, h, w), mask_target, labels)`` for the
sigmoid focal loss and the unified family, class-aware and class-agnostic, saturated logits;
(2) mmseg's ``(logits, label, weight=, ignore_index=)`` and the OHEM ``reduction_override``
for every segmentation loss, with ignored pixels, uint8 labels, all-ignored images and
per-pixel weights; (3) probability targets (Mixup / CutMix / smoothing) for the softmax focal
loss at ordinary and saturated logits, against the 50-digit reference. The frameworks' own head
code calls these in ``tests/clients/``.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from reference import (
    authors_unified_focal,
    focal_elem,
    keras_binary_inputs,
    map_elements,
    softmax_focal_row,
)

import focal_plugin  # noqa: F401  (registers the modules)
from focal_plugin.functional import sigmoid_focal_loss, unified_focal_loss
from focal_plugin.losses import (
    StableAsymmetricFocalLoss,
    StableFocalLoss,
    StableFocalTverskyLoss,
    StableQualityFocalLoss,
    StableSoftmaxFocalLoss,
    StableVarifocalLoss,
    UnifiedFocalLoss,
)

torch.set_num_threads(1)
REGION = [UnifiedFocalLoss, StableAsymmetricFocalLoss, StableFocalTverskyLoss]
SEGMENTATION = REGION + [StableSoftmaxFocalLoss, StableFocalLoss]
ALL = SEGMENTATION + [StableQualityFocalLoss, StableVarifocalLoss]


def _mask_call(seed: int, n: int, num_classes: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, num_classes, 7, 7, generator=g, dtype=torch.float64) * scale
    target = (torch.rand(n, 7, 7, generator=g) > 0.6).double()
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return pred, target, labels


# --- (1) mmdet's mask heads ------------------------------------------------------------------
@pytest.mark.parametrize('seed, n, num_classes, scale', [
    (s, n, c, sc) for s, (n, c, sc) in enumerate(itertools.product(
        (1, 3), (1, 4), (1.0, 20.0, 100.0)))])
@pytest.mark.parametrize('gamma', [0.5, 2.0])
def test_mask_head_call_scores_the_labelled_channel_exactly(seed, n, num_classes, scale, gamma):
    """StableFocalLoss(use_mask=True) == the 50-digit focal loss of pred[i, label_i], mean
    over the n x h x w mask pixels (mmdet's mask cross-entropy mean); the gradient reaches
    the labelled channels only, finite and right at saturated logits."""
    pred, target, labels = _mask_call(seed, n, num_classes, scale)
    x = pred.clone().requires_grad_(True)
    loss = StableFocalLoss(gamma=gamma, alpha=0.25, use_mask=True)(x, target, labels)
    loss.backward()
    chosen = pred[torch.arange(n), labels]
    want, dwant, scale = map_elements(focal_elem, chosen, target, gamma, 0.25)
    assert loss.item() == pytest.approx(want.mean().item(), rel=1e-9, abs=1e-300)
    assert torch.isfinite(x.grad).all()
    got = x.grad[torch.arange(n), labels] * chosen.numel()
    # float64 promises 1e-9 of the sum of the gradient's two terms' magnitudes (they cancel)
    assert ((got - dwant).abs() <= 1e-9 * scale + 1e-30).all()  # (1e-30: as the suite)
    x.grad[torch.arange(n), labels] = 0
    assert (x.grad == 0).all()  # the other classes' channels get no gradient


@pytest.mark.parametrize('seed, num_classes', [(0, 1), (1, 4), (2, 4)])
@pytest.mark.parametrize('variant', ['asymmetric', 'symmetric'])
def test_mask_head_call_of_the_unified_loss_is_the_authors_loss_on_that_channel(
        seed, num_classes, variant):
    pred, target, labels = _mask_call(seed, 3, num_classes, 2.0)
    got = UnifiedFocalLoss(use_mask=True, variant=variant)(pred, target, labels)
    chosen = pred[torch.arange(3), labels].unsqueeze(1)
    want = authors_unified_focal(*keras_binary_inputs(chosen, target.long()),
                                 symmetric=variant == 'symmetric')
    assert got.item() == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize('cls', REGION + [StableFocalLoss])
def test_mask_head_call_is_finite_at_saturated_logits(cls):
    pred, target, labels = _mask_call(5, 4, 4, 1.0)
    pred = (pred.sign() * 1e4).float().requires_grad_(True)
    loss = cls(use_mask=True, gamma=0.5)(pred, target.float(), labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize('cls', REGION)
def test_mask_head_soft_targets_need_the_sigmoid_focal_loss(cls):
    pred, target, labels = _mask_call(0, 2, 4, 1.0)
    with pytest.raises(ValueError, match='target.*soft mask targets need StableFocalLoss'):
        cls(use_mask=True)(pred, target * 0.7, labels)


@pytest.mark.parametrize('cls', REGION + [StableFocalLoss])
def test_mask_head_labels_are_checked_and_named(cls):
    pred, target, labels = _mask_call(0, 2, 4, 1.0)
    with pytest.raises(ValueError, match="mask head's class labels"):
        cls(use_mask=True)(pred, target, labels + 4)
    with pytest.raises(TypeError, match="mask head's class labels"):
        cls(use_mask=True)(pred, target, None)
    with pytest.raises(ValueError, match='use_mask=True'):  # forgotten: the hint says it
        cls()(pred, target, labels)


# --- (2) MMSegmentation's decode heads ---------------------------------------------------------
def _seg(seed: int, num_classes: int, ignored: float = 0.2, dtype=torch.long):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, num_classes, 6, 6, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, max(num_classes, 2), (2, 6, 6), generator=g)
    labels[torch.rand(2, 6, 6, generator=g) < ignored] = 255
    return logits, labels.to(dtype)


@pytest.mark.parametrize('cls', ALL)
def test_every_loss_has_an_mmseg_loss_name(cls):
    assert cls().loss_name.startswith('loss_')
    assert cls(loss_name='loss_mine').loss_name == 'loss_mine'
    with pytest.raises(ValueError, match="loss_name must start with 'loss_'"):
        cls(loss_name='mine')  # mmseg would log it and never add it to the total


@pytest.mark.parametrize('cls', SEGMENTATION)
@pytest.mark.parametrize('dtype', [torch.long, torch.uint8], ids=str)
@pytest.mark.parametrize('seed, ignored', [(0, 0.0), (1, 0.3), (2, 1.0)])
def test_call_time_ignore_index_wins_and_ignored_pixels_count_for_nothing(cls, dtype, seed,
                                                                         ignored):
    """The decode head passes its ignore_index (255) at every call, whatever the module's
    default (-100 for the softmax focal loss). Ignored pixels count for nothing: any other
    value under them gives the same loss and no gradient there; all-ignored images give 0."""
    logits, labels = _seg(seed, 3, ignored, dtype)
    loss = cls()
    x = logits.clone().requires_grad_(True)
    got = loss(x, labels, weight=None, ignore_index=255)
    got.backward()
    other = torch.where(labels == 255, torch.ones_like(labels), labels)
    relabelled = loss(logits, torch.where(labels == 255, labels, other), ignore_index=255)
    assert torch.isfinite(got) and got.item() == pytest.approx(relabelled.item(), rel=1e-12)
    assert (x.grad.abs().sum(1)[labels == 255] == 0).all()
    if ignored == 1.0 and cls is not StableFocalTverskyLoss:
        assert got.item() == 0  # (Tversky: no pixel -> smooth / smooth on every class)


@pytest.mark.parametrize('cls', REGION + [StableSoftmaxFocalLoss, StableFocalLoss])
def test_zero_one_pixel_weights_act_on_the_sums_like_ignoring(cls):
    """mmseg's OHEM sampler passes a 0/1 weight per pixel: a 0-weight pixel adds nothing to
    any sum (loss, TP, FP, FN) and gets no gradient; a weight of ones changes nothing."""
    logits, labels = _seg(3, 3, 0.1)
    keep = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(4)) > 0.4
    loss = cls()
    plain = loss(logits, labels, ignore_index=255)
    ones = loss(logits, labels, weight=torch.ones(2, 6, 6, dtype=torch.float64),
                ignore_index=255)
    assert ones.item() == pytest.approx(plain.item(), rel=1e-12)
    x = logits.clone().requires_grad_(True)
    weighted = loss(x, labels, weight=keep.double(), ignore_index=255)
    weighted.backward()
    assert (x.grad.abs().sum(1)[~keep] == 0).all()
    if cls is StableFocalTverskyLoss:  # region sums only: exactly the pixels kept
        kept = loss(logits, torch.where(keep, labels, 255), ignore_index=255)
        assert weighted.item() == pytest.approx(kept.item(), rel=1e-12)


@pytest.mark.parametrize('cls', [StableAsymmetricFocalLoss, StableSoftmaxFocalLoss])
def test_ohem_per_pixel_losses_and_weighted_mean(cls):
    """reduction_override='none' gives one loss per pixel (what the OHEM sampler ranks), 0 at
    ignored ones; the weighted mean is sum(w * l) / non-ignored pixels (mmseg's
    avg_non_ignore=True) or / all pixels (avg_non_ignore=False)."""
    logits, labels = _seg(6, 4, 0.25)
    w = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    per_pixel = cls()(logits, labels, ignore_index=255, reduction_override='none')
    assert per_pixel.shape == labels.shape and (per_pixel[labels == 255] == 0).all()
    for avg_non_ignore, count in ((True, (labels != 255).sum()), (False, labels.numel())):
        got = cls(avg_non_ignore=avg_non_ignore)(logits, labels, weight=w, ignore_index=255)
        if cls is StableSoftmaxFocalLoss:  # mmdet/mmseg's weight_reduce_loss: / (count + eps)
            count = count + torch.finfo(torch.float32).eps
        assert got.item() == pytest.approx(((per_pixel * w).sum() / count).item(), rel=1e-12)


@pytest.mark.parametrize('cls', [UnifiedFocalLoss, StableFocalTverskyLoss])
def test_region_losses_refuse_per_pixel_reduction_naming_ohem(cls):
    logits, labels = _seg(0, 3)
    with pytest.raises(ValueError, match='reduction_override.*OHEMPixelSampler'):
        cls()(logits, labels, weight=None, ignore_index=255, reduction_override='none')


def test_unified_lambda_and_pixel_weight_cannot_be_confused():
    logits, labels = _seg(0, 2)
    old, new = UnifiedFocalLoss(weight=0.3), UnifiedFocalLoss(tversky_weight=0.3)
    assert old(logits, labels).item() == new(logits, labels).item()
    assert old(logits, labels).item() == pytest.approx(
        unified_focal_loss(logits, labels, 0.3).item(), rel=1e-12)
    assert 'tversky_weight=0.3' in repr(old)
    with pytest.raises(TypeError, match='weight and tversky_weight'):
        UnifiedFocalLoss(weight=0.3, tversky_weight=0.3)
    with pytest.raises(TypeError, match='lambda is the constructor argument tversky_weight'):
        UnifiedFocalLoss()(logits, labels, weight=0.3)
    with pytest.raises(TypeError, match="forward's weight is a per-pixel weight tensor"):
        UnifiedFocalLoss(weight=torch.ones(2, 6, 6))


@pytest.mark.parametrize('num_classes', [1, 2, 4])
def test_sigmoid_focal_on_label_maps_is_the_flattened_rows_without_ignored_pixels(num_classes):
    """Dense (N, H, W) labels for (N, C, H, W) logits, MMSegmentation's FocalLoss convention
    (C >= 2: label C is background; one channel: label 1 is the foreground), equal to the
    (pixels, C) rows of the non-ignored pixels through the independent 50-digit reference."""
    logits, labels = _seg(8, num_classes, 0.3)
    if num_classes > 1:
        labels[0, 0, :3] = num_classes  # background pixels
    x = logits.clone().requires_grad_(True)
    got = StableFocalLoss(gamma=0.5, alpha=0.25)(x, labels, ignore_index=255)
    keep = labels != 255
    rows = logits.permute(0, 2, 3, 1)[keep]
    kept = labels[keep]
    onehot = (kept[:, None] == torch.arange(num_classes) + int(num_classes == 1)).double()
    want = map_elements(focal_elem, rows, onehot, 0.5, 0.25)[0].mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-9)
    got.backward()
    assert (x.grad.abs().sum(1)[~keep] == 0).all()


# --- (3) probability targets (MMPretrain's Mixup / CutMix / smoothing) -----------------------
def _reference_rows(logits: torch.Tensor, q: torch.Tensor, gamma: float):
    """sum_c q_c * FL(x, c): the loss is linear in the target distribution."""
    loss, grad = [], []
    for row, dist in zip(logits.tolist(), q.tolist()):
        parts = [softmax_focal_row(row, c, gamma) for c in range(len(row))]
        loss.append(sum(w * p[0] for w, p in zip(dist, parts)))
        grad.append([sum(w * p[1][k] for w, p in zip(dist, parts)) for k in range(len(row))])
    return torch.tensor(loss, dtype=torch.float64), torch.tensor(grad, dtype=torch.float64)


@pytest.mark.parametrize('scale', [1.0, 20.0, 100.0, 1e4])
@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=str)
def test_probability_targets_against_the_50_digit_reference(scale, gamma, dtype):
    g = torch.Generator().manual_seed(int(scale) % 97 + int(gamma * 10))
    logits = (torch.randn(5, 4, generator=g, dtype=torch.float64) * scale)
    a, b = torch.randint(0, 4, (5,), generator=g), torch.randint(0, 4, (5,), generator=g)
    lam = torch.rand(5, 1, generator=g, dtype=torch.float64)
    q = lam * torch.nn.functional.one_hot(a, 4) + (1 - lam) * torch.nn.functional.one_hot(b, 4)
    x = logits.to(dtype).requires_grad_(True)
    got = StableSoftmaxFocalLoss(gamma=gamma)(x, q.to(dtype), avg_factor=5)  # mmpretrain's call
    got.backward()
    want, dwant = _reference_rows(x.detach().double(), q.to(dtype).double(), gamma)
    count = 5 + torch.finfo(torch.float32).eps  # mmdet's weight_reduce_loss: / (avg_factor + eps)
    rtol = 1e-9 if dtype == torch.float64 else 2e-5
    assert got.item() == pytest.approx(want.sum().item() / count, rel=rtol, abs=1e-30)
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.double(), dwant / count, rtol=rtol, atol=1e-6 * rtol)


def test_probability_targets_one_hot_and_smoothing_match_index_targets():
    logits, _ = _seg(9, 5)
    labels = torch.randint(0, 5, (2, 6, 6), generator=torch.Generator().manual_seed(9))
    onehot = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).double()
    for ls in (0.0, 0.1):
        loss = StableSoftmaxFocalLoss(gamma=0.5, label_smoothing=ls)
        assert loss(logits, onehot).item() == pytest.approx(loss(logits, labels).item(),
                                                            rel=1e-12)


def test_probability_target_errors_name_the_module_arguments():
    logits = torch.randn(4, 3)
    loss = StableSoftmaxFocalLoss()
    with pytest.raises(ValueError, match='target must be probabilities'):
        loss(logits, torch.full((4, 3), 2.0))
    with pytest.raises(TypeError, match=r'target must be integer class indices .* or class '
                                        r'probabilities of the shape of pred'):
        loss(logits, torch.rand(4, 5))
    with pytest.raises(TypeError, match='pred must be a floating point'):
        loss(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize('gamma', [0.5, 2.0])
def test_sigmoid_focal_mask_call_matches_functional_on_the_slice(gamma):
    """The same numbers through the public functional form (a second route)."""
    pred, target, labels = _mask_call(11, 5, 4, 3.0)
    got = StableFocalLoss(gamma=gamma, use_mask=True, reduction='sum')(pred, target, labels)
    want = sigmoid_focal_loss(pred[np.arange(5), labels], target, 0.25, gamma, 'sum')
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('num_classes', [1, 3])
def test_an_integer_pixel_weight_counts_the_pixel_that_many_times(seed, num_classes):
    """Per-pixel weights scale each pixel's share of TP, FP and FN once (and of the focal
    sum): a pixel of weight k is the same as k copies of it. Drawn integer weights 0-3 against
    the image with every pixel repeated by its weight (an independent route: no weights)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, num_classes, 1, 12, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(0, max(num_classes, 2), (1, 1, 12), generator=g)
    weight = torch.randint(0, 4, (1, 1, 12), generator=g)
    repeat = weight.flatten()
    copies_x = logits.flatten(2).repeat_interleave(repeat, dim=2).unsqueeze(2)
    copies_y = labels.flatten(1).repeat_interleave(repeat, dim=1).unsqueeze(1)
    for loss in (StableFocalTverskyLoss(), UnifiedFocalLoss(tversky_weight=1.0)):
        got = loss(logits, labels, weight=weight.double())
        want = loss(copies_x, copies_y)
        assert got.item() == pytest.approx(want.item(), rel=1e-10)
    focal = StableAsymmetricFocalLoss()
    got = focal(logits, labels, weight=weight.double(), reduction_override='sum')
    assert got.item() == pytest.approx(
        focal(copies_x, copies_y, reduction_override='sum').item(), rel=1e-10)
