"""Unified Focal Loss for class-imbalanced segmentation and its two components.

Yeung, Sala, Schönlieb, Rundo, "Unified Focal loss: Generalising Dice and cross entropy-based
losses to handle class imbalanced medical image segmentation", Computerized Medical Imaging and
Graphics 95 (2022) 102026, https://arxiv.org/abs/2102.04525

Class 0 is the background; classes 1..C-1 are the rare (foreground) classes.

* Modified (asymmetric) focal loss, per pixel, averaged over non-ignored pixels::

      L_maF = (1 - delta) * (1 - p_0) ** gamma * (-log p_0) * [y == 0]
              + delta * sum_{c >= 1} (-log p_c) * [y == c]

  The symmetric variant also modulates the foreground terms by ``(1 - p_c) ** gamma``.

* Modified (asymmetric) focal Tversky loss, per image and class, averaged::

      TI_c = (TP_c + s) / (TP_c + delta * FN_c + (1 - delta) * FP_c + s)
      L_maFT = (1 - TI_0) + sum_{c >= 1} (1 - TI_c) ** (1 - gamma)      (mean over classes)

  The symmetric variant also raises the background term to ``1 - gamma``.

* Unified: ``weight * L_FT + (1 - weight) * L_F`` (lambda = 0.5, delta = 0.6, gamma = 0.5 by
  default, the paper's recommended setting).

``smooth`` (s above) defaults to 1e-7, the authors' ``K.epsilon()``
(https://github.com/mlyg/unified-focal-loss): on an image without foreground the Tversky term
of the foreground class is ``(delta * FN + (1 - delta) * FP) / (... + s)`` with FN = TP = 0, so
s sets its value and the paper's numbers need the paper's s.

Stability without the reference code's clipping of probabilities to [1e-7, 1 - 1e-7] (which
silences gradients of confident pixels): probabilities are used as ``log_softmax`` /
``logsigmoid`` values and ``log(1 - p)`` as :func:`log1m_softmax`; ``1 - TI`` is computed as
``(delta * FN + (1 - delta) * FP) / denominator`` (no cancellation as TI -> 1) with FN from
``1 - p`` taken as ``exp(log(1 - p))``. The Tversky sums are accumulated in float64: at
saturated logits they are sums of float32 denormals, and the power ``(1 - TI) ** (1 - gamma)``
of such a tiny base overflows float32 in its derivative. At perfect overlap (``1 - TI == 0``)
the gradient of the power is defined as 0 (see :func:`.stabilizer.zero_safe_pow`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import compute_dtype
from .fused_segmentation import fused_softmax_focal, fused_unified, segmentation_fused
from .softmax_focal import softmax_margin
from .stabilizer import modulating_factor
from .targets import check_label_range
from .validation import (
    check_choice,
    check_eps,
    check_exponent,
    check_flag,
    check_ignore_index,
    check_index_labels,
    check_logits,
    check_positive,
    check_probability,
    check_reduction,
    check_stabilizer,
    check_weight_tensor,
    not_ignored,
)

__all__ = ['asymmetric_focal_loss', 'focal_tversky_loss', 'unified_focal_loss',
           'unified_family_loss', 'UFL_VARIANTS']

UFL_VARIANTS = ('asymmetric', 'symmetric')
NAMES = ('inputs', 'targets', 'pixel_weight')  # (the loss modules pass their own names)


def _class_log_probs(x: Tensor) -> Tuple[Tensor, Tensor]:
    """``(log p, log(1 - p))`` per class, shape (N, C', ...): one logit channel means a
    sigmoid over (background, foreground), C >= 2 channels a softmax."""
    # p_c = sigmoid(margin_c) in both cases (the binary margins are -x and x)
    margin = torch.cat([-x, x], dim=1) if x.shape[1] == 1 else softmax_margin(x, dim=1)
    return F.logsigmoid(margin), F.logsigmoid(-margin)


def _check(inputs: Tensor, targets: Tensor, delta: float, gamma: float, variant: str,
           ignore_index: int, stabilizer: str, eps: float, tversky: bool = True,
           pixel_weight: Optional[Tensor] = None,
           names: Tuple[str, str, str] = NAMES) -> Tuple[Tensor, Tensor, Tensor]:
    """Validate once for every component; returns (labels, ignored ones set to 0; valid
    mask; pixel mask: the valid mask times ``pixel_weight``). ``tversky``: a Tversky term is
    computed, so gamma <= 1 (its exponent is 1 - gamma); the focal component alone takes any
    gamma >= 0
    (the authors' default there is 2). ``names``: the caller's names of (inputs, targets,
    pixel_weight) for error messages."""
    check_logits(inputs, names[0])
    if inputs.ndim < 3:
        raise ValueError(f'{names[0]} must be (N, C, d1, ...) segmentation logits, got shape '
                         f'{tuple(inputs.shape)}')
    check_index_labels(targets, names[1])
    expected = (inputs.shape[0],) + tuple(inputs.shape[2:])
    if targets.ndim == inputs.ndim and targets.shape[1] == 1:
        targets = targets.squeeze(1)  # (N, 1, H, W) masks are accepted too
    if tuple(targets.shape) != expected:
        raise ValueError(f'{names[1]} must have shape {expected} for {names[0]} '
                         f'{tuple(inputs.shape)}, got {tuple(targets.shape)}')
    check_probability(delta, 'delta')
    check_exponent(gamma, 'gamma')
    if tversky and gamma > 1:
        raise ValueError(f'gamma must be in [0, 1] (the Tversky exponent is 1 - gamma), '
                         f'got {gamma}')
    check_choice(variant, 'variant', UFL_VARIANTS)
    check_stabilizer(stabilizer)
    check_eps(eps)
    ignore_index = check_ignore_index(ignore_index)
    num_classes = max(inputs.shape[1], 2)
    valid = not_ignored(targets, ignore_index)
    labels = torch.where(valid, targets, 0)
    check_label_range(labels, 0, num_classes - 1, names[1],
                      f' (class indices; or ignore_index={ignore_index})')
    return labels, valid, _pixel_mask(valid, pixel_weight, names[2])


def _onehot(labels: Tensor, num_classes: int) -> Tensor:
    """By comparison, not F.one_hot: no host sync, a bad label never indexes memory."""
    classes = torch.arange(num_classes, device=labels.device)
    return labels.unsqueeze(1) == classes.view((1, -1) + (1,) * (labels.ndim - 1))


def _pixel_mask(valid: Tensor, pixel_weight: Optional[Tensor], name: str) -> Tensor:
    """What each pixel counts for: 1 (0 if ignored), times its weight if one is given (an
    OHEM sampler's 0/1 choice, a boundary weight map). Weights are (N, d1, ...) like the
    labels, or (N, 1, d1, ...)."""
    if pixel_weight is None:
        return valid
    check_weight_tensor(pixel_weight, name)
    if pixel_weight.ndim == valid.ndim + 1 and pixel_weight.shape[1] == 1:
        pixel_weight = pixel_weight.squeeze(1)
    if pixel_weight.shape != valid.shape:
        raise ValueError(f'{name} must be one weight per pixel, of shape '
                         f'{tuple(valid.shape)} (the labels\' shape), got '
                         f'{tuple(pixel_weight.shape)}')
    return valid * pixel_weight


def _focal_part(x: Tensor, onehot: Tensor, valid: Tensor, mask: Tensor, delta: float,
                gamma: float, symmetric: bool, stabilizer: str, eps: float,
                reduction: str = 'mean', avg_non_ignore: bool = True) -> Tensor:
    log_p, log_1mp = _class_log_probs(x)
    factor = modulating_factor(gamma, stabilizer, eps,
                               base=lambda: 1 - torch.exp(log_p),
                               log_base=lambda: log_1mp)
    y = onehot.to(x.dtype)
    ce = -y * log_p
    class_weight = torch.full((y.shape[1],), delta, dtype=x.dtype, device=x.device)
    class_weight[0] = 1 - delta
    modulated = torch.ones_like(class_weight, dtype=torch.bool)
    modulated[1:] = symmetric  # background always suppressed; foreground only if symmetric
    shape = (1, -1) + (1,) * (x.ndim - 2)
    per_class = torch.where(modulated.view(shape), factor * ce, ce) * class_weight.view(shape)
    per_pixel = per_class.sum(dim=1) * mask
    if reduction == 'none':
        return per_pixel
    if reduction == 'sum':
        return per_pixel.sum()
    # the mean over the pixels that count (mmseg's avg_non_ignore) or over all of them
    count = valid.sum().clamp(min=1) if avg_non_ignore else max(valid.numel(), 1)
    return per_pixel.sum() / count


def _tversky_part(x: Tensor, onehot: Tensor, mask: Tensor, delta: float, gamma: float,
                  symmetric: bool, smooth: float, stabilizer: str, eps: float) -> Tensor:
    log_p, log_1mp = _class_log_probs(x.double())
    mask = mask.unsqueeze(1).double()
    y = onehot.double() * mask
    p = torch.exp(log_p)  # the mask enters once, through y and mask - y
    dims = tuple(range(2, x.ndim))
    tp = (y * p).sum(dims)
    fn = (y * torch.exp(log_1mp)).sum(dims)
    fp = ((mask - y) * p).sum(dims)
    mismatch = delta * fn + (1 - delta) * fp
    denominator = tp + mismatch + smooth
    one_minus_ti = mismatch / denominator  # == 1 - (tp + s) / denominator, without cancelling
    factor = modulating_factor(1 - gamma, stabilizer, eps,
                               base=lambda: 1 - (tp + smooth) / denominator,
                               exact_base=lambda: one_minus_ti)
    modulated = torch.ones(tp.shape[1], dtype=torch.bool, device=x.device)
    modulated[0] = symmetric  # foreground always enhanced; background only if symmetric
    per_class = torch.where(modulated, factor, one_minus_ti)
    # mean over images and classes; zero images give 0, not the NaN of an empty mean
    return (per_class.sum() / max(per_class.numel(), 1)).to(compute_dtype(x))


def asymmetric_focal_loss(inputs: Tensor, targets: Tensor, delta: float = 0.6,
                          gamma: float = 0.5, *, variant: str = 'asymmetric',
                          ignore_index: int = 255, pixel_weight: Optional[Tensor] = None,
                          reduction: str = 'mean', avg_non_ignore: bool = True,
                          stabilizer: str = 'exact', eps: float = 1e-3) -> Tensor:
    """The focal (distribution-based) component (any ``gamma >= 0``: without the Tversky
    term nothing limits it to [0, 1]). ``reduction``: ``'mean'`` over the non-ignored pixels
    (over all pixels with ``avg_non_ignore=False``, mmseg's legacy mean), ``'sum'``, or
    ``'none'``: the per-pixel loss (N, d1, ...), 0 where ignored. ``pixel_weight``: optional
    per-pixel weights (N, d1, ...)."""
    return unified_family_loss('focal', inputs, targets, 0.0, delta, gamma, variant=variant,
                               ignore_index=ignore_index, pixel_weight=pixel_weight,
                               reduction=reduction, avg_non_ignore=avg_non_ignore,
                               stabilizer=stabilizer, eps=eps)


def focal_tversky_loss(inputs: Tensor, targets: Tensor, delta: float = 0.6,
                       gamma: float = 0.5, *, variant: str = 'asymmetric',
                       ignore_index: int = 255, pixel_weight: Optional[Tensor] = None,
                       smooth: float = 1e-7, stabilizer: str = 'exact',
                       eps: float = 1e-3) -> Tensor:
    """The focal Tversky (region-based) component, mean over images and classes.
    ``pixel_weight`` scales each pixel's share of TP, FP and FN."""
    return unified_family_loss('tversky', inputs, targets, 1.0, delta, gamma, variant=variant,
                               ignore_index=ignore_index, pixel_weight=pixel_weight,
                               smooth=smooth, stabilizer=stabilizer, eps=eps)


def unified_focal_loss(inputs: Tensor, targets: Tensor, weight: float = 0.5,
                       delta: float = 0.6, gamma: float = 0.5, *,
                       variant: str = 'asymmetric', ignore_index: int = 255,
                       pixel_weight: Optional[Tensor] = None, avg_non_ignore: bool = True,
                       smooth: float = 1e-7, stabilizer: str = 'exact',
                       eps: float = 1e-3) -> Tensor:
    """``weight * focal_tversky + (1 - weight) * asymmetric_focal`` (a scalar). ``weight`` is
    the paper's lambda (a number); per-pixel weights are ``pixel_weight``."""
    return unified_family_loss('unified', inputs, targets, weight, delta, gamma,
                               variant=variant, ignore_index=ignore_index,
                               pixel_weight=pixel_weight, avg_non_ignore=avg_non_ignore,
                               smooth=smooth, stabilizer=stabilizer, eps=eps)


def unified_family_loss(part: str, inputs: Tensor, targets: Tensor, lam: float, delta: float,
                        gamma: float, *, variant: str, ignore_index: int,
                        pixel_weight: Optional[Tensor] = None, reduction: str = 'mean',
                        avg_non_ignore: bool = True, smooth: float = 1e-7,
                        stabilizer: str = 'exact', eps: float = 1e-3,
                        names: Tuple[str, str, str] = NAMES) -> Tensor:
    """The one body of the three losses above: ``part`` is 'focal', 'tversky' or 'unified'
    (``lam * tversky + (1 - lam) * focal``). ``names``: the caller's names of (inputs,
    targets, pixel_weight) in error messages (the loss modules say pred, target, weight)."""
    check_probability(lam, 'weight (lambda)')
    check_reduction(reduction)
    if part != 'focal' and reduction != 'mean':
        raise ValueError(f'reduction must be \'mean\' for a loss with a Tversky term (a region '
                         f'term has no per-pixel value), got {reduction!r}')
    avg_non_ignore = check_flag(avg_non_ignore, 'avg_non_ignore')
    if part != 'focal':
        smooth = check_positive(smooth, 'smooth')
    labels, valid, mask = _check(inputs, targets, delta, gamma, variant, ignore_index,
                                 stabilizer, eps, tversky=part != 'focal',
                                 pixel_weight=pixel_weight, names=names)
    x = inputs.to(compute_dtype(inputs))
    symmetric = variant == 'symmetric'

    def reference(logits: Tensor, reduction: str = reduction) -> Tensor:
        onehot = _onehot(labels, max(logits.shape[1], 2))
        focal = tversky = 0.0
        if part != 'tversky':
            focal = _focal_part(logits, onehot, valid, mask, delta, gamma, symmetric,
                                stabilizer, eps, reduction, avg_non_ignore)
        if part != 'focal':
            tversky = _tversky_part(logits, onehot, mask, delta, gamma, symmetric, smooth,
                                    stabilizer, eps)
        return tversky if part == 'tversky' else focal if part == 'focal' else \
            lam * tversky + (1 - lam) * focal

    if stabilizer != 'exact' or x.shape[1] < 2 or not segmentation_fused(x, pixel_weight):
        return reference(x)
    # C >= 2 softmax channels, class indices: one log-softmax pass (.fused_segmentation)
    count = valid.sum().clamp(min=1) if avg_non_ignore else max(valid.numel(), 1)
    if part != 'focal':
        return fused_unified(x, labels, valid, mask, lam if part == 'unified' else 1.0,
                             delta, gamma, symmetric, smooth, count, reference)
    background = labels == 0
    weight = torch.where(background, x.new_tensor(1 - delta), x.new_tensor(delta)) * mask
    pixel_gamma = torch.where(background | symmetric, x.new_tensor(gamma), x.new_tensor(0.0))
    per_pixel = fused_softmax_focal(x, labels, weight, pixel_gamma,
                                    lambda logits: reference(logits, 'none'))
    if reduction == 'none':
        return per_pixel
    return per_pixel.sum() if reduction == 'sum' else per_pixel.sum() / count
