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

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import compute_dtype
from .softmax_focal import softmax_margin
from .stabilizer import modulating_factor
from .targets import check_label_range
from .validation import (
    check_choice,
    check_eps,
    check_exponent,
    check_ignore_index,
    check_index_labels,
    check_logits,
    check_positive,
    check_probability,
    check_stabilizer,
    not_ignored,
)

__all__ = ['asymmetric_focal_loss', 'focal_tversky_loss', 'unified_focal_loss',
           'UFL_VARIANTS']

UFL_VARIANTS = ('asymmetric', 'symmetric')


def _class_log_probs(x: Tensor) -> Tuple[Tensor, Tensor]:
    """``(log p, log(1 - p))`` per class, shape (N, C', ...): one logit channel means a
    sigmoid over (background, foreground), C >= 2 channels a softmax."""
    # p_c = sigmoid(margin_c) in both cases (the binary margins are -x and x)
    margin = torch.cat([-x, x], dim=1) if x.shape[1] == 1 else softmax_margin(x, dim=1)
    return F.logsigmoid(margin), F.logsigmoid(-margin)


def _check(inputs: Tensor, targets: Tensor, delta: float, gamma: float, variant: str,
           ignore_index: int, stabilizer: str, eps: float,
           tversky: bool = True) -> Tuple[Tensor, Tensor, int]:
    """Validate once for every component; returns (one-hot targets, valid mask, classes).
    ``tversky``: a Tversky term is computed, so gamma <= 1 (its exponent is 1 - gamma); the
    focal component alone takes any gamma >= 0 (the authors' default there is 2)."""
    check_logits(inputs)
    if inputs.ndim < 3:
        raise ValueError('inputs must be (N, C, d1, ...) segmentation logits, got shape '
                         f'{tuple(inputs.shape)}')
    check_index_labels(targets)
    expected = (inputs.shape[0],) + tuple(inputs.shape[2:])
    if targets.ndim == inputs.ndim and targets.shape[1] == 1:
        targets = targets.squeeze(1)  # (N, 1, H, W) masks are accepted too
    if tuple(targets.shape) != expected:
        raise ValueError(f'targets must have shape {expected} for inputs '
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
    check_label_range(labels, 0, num_classes - 1, 'targets',
                      f' (class indices; or ignore_index={ignore_index})')
    # one-hot by comparison, not F.one_hot: no host sync, a bad label never indexes memory
    classes = torch.arange(num_classes, device=labels.device)
    onehot = labels.unsqueeze(1) == classes.view((1, -1) + (1,) * (labels.ndim - 1))
    return onehot, valid, num_classes


def _focal_part(x: Tensor, onehot: Tensor, valid: Tensor, delta: float, gamma: float,
                symmetric: bool, stabilizer: str, eps: float) -> Tensor:
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
    per_pixel = per_class.sum(dim=1) * valid
    return per_pixel.sum() / valid.sum().clamp(min=1)


def _tversky_part(x: Tensor, onehot: Tensor, valid: Tensor, delta: float, gamma: float,
                  symmetric: bool, smooth: float, stabilizer: str, eps: float) -> Tensor:
    log_p, log_1mp = _class_log_probs(x.double())
    mask = valid.unsqueeze(1).double()
    y = onehot.double() * mask
    p = torch.exp(log_p) * mask
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
                          ignore_index: int = 255, stabilizer: str = 'exact',
                          eps: float = 1e-3) -> Tensor:
    """The focal (distribution-based) component, mean over non-ignored pixels (any
    ``gamma >= 0``: without the Tversky term nothing limits it to [0, 1])."""
    onehot, valid, _ = _check(inputs, targets, delta, gamma, variant, ignore_index,
                              stabilizer, eps, tversky=False)
    x = inputs.to(compute_dtype(inputs))
    return _focal_part(x, onehot, valid, delta, gamma, variant == 'symmetric', stabilizer,
                       eps)


def focal_tversky_loss(inputs: Tensor, targets: Tensor, delta: float = 0.6,
                       gamma: float = 0.5, *, variant: str = 'asymmetric',
                       ignore_index: int = 255, smooth: float = 1e-7,
                       stabilizer: str = 'exact', eps: float = 1e-3) -> Tensor:
    """The focal Tversky (region-based) component, mean over images and classes."""
    smooth = check_positive(smooth, 'smooth')
    onehot, valid, _ = _check(inputs, targets, delta, gamma, variant, ignore_index,
                              stabilizer, eps)
    x = inputs.to(compute_dtype(inputs))
    return _tversky_part(x, onehot, valid, delta, gamma, variant == 'symmetric', smooth,
                         stabilizer, eps)


def unified_focal_loss(inputs: Tensor, targets: Tensor, weight: float = 0.5,
                       delta: float = 0.6, gamma: float = 0.5, *,
                       variant: str = 'asymmetric', ignore_index: int = 255,
                       smooth: float = 1e-7, stabilizer: str = 'exact',
                       eps: float = 1e-3) -> Tensor:
    """``weight * focal_tversky + (1 - weight) * asymmetric_focal`` (a scalar)."""
    check_probability(weight, 'weight (lambda)')
    smooth = check_positive(smooth, 'smooth')
    onehot, valid, _ = _check(inputs, targets, delta, gamma, variant, ignore_index,
                              stabilizer, eps)
    x = inputs.to(compute_dtype(inputs))
    symmetric = variant == 'symmetric'
    tversky = _tversky_part(x, onehot, valid, delta, gamma, symmetric, smooth, stabilizer,
                            eps)
    focal = _focal_part(x, onehot, valid, delta, gamma, symmetric, stabilizer, eps)
    return weight * tversky + (1 - weight) * focal

