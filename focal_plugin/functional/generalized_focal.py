"""Generalized focal variants with soft (IoU-quality) targets: QFL and VFL.

Quality Focal Loss (Li et al., "Generalized Focal Loss", NeurIPS 2020,
https://arxiv.org/abs/2006.04388):

    QFL(x, y) = BCE(x, y) * |y - sigmoid(x)| ** beta

Varifocal Loss (Zhang et al., "VarifocalNet", CVPR 2021, https://arxiv.org/abs/2008.13367):

    VFL(x, q) = BCE(x, q) * (q                                 if q > 0   (iou_weighted)
                             alpha * |sigmoid(x) - q| ** gamma  if q <= 0)

Both modulate by ``|y - sigmoid(x)| ** k``. For k < 1 its slope is infinite where
``sigmoid(x) == y``: at a saturated negative (``y = 0``, ``sigmoid(x)`` rounds to 0), and at a
positive whose prediction hits its quality score exactly. In ``'exact'`` mode the base's log is
computed without cancellation (:func:`.logspace.log_quality_base`) and, at the cusp
``sigmoid(x) == y`` itself, the gradient of the modulating factor is defined as 0 - the cusp is
the term's minimum, and 0 belongs to its subdifferential (a V-shaped minimum like ``|u|`` at 0).
Away from the cusp the gradient is the true one; it is large but finite close to it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import compute_dtype, reduce
from .fused import fused_loss
from .logspace import exact_bce, log_quality_base, softplus
from .stabilizer import modulating_factor
from .targets import check_activated_inputs, check_probability_targets
from .validation import (
    check_eps,
    check_exponent,
    check_flag,
    check_logits,
    check_non_negative,
    check_reduction,
    check_same_shape,
    check_stabilizer,
)

__all__ = ['quality_focal_loss', 'varifocal_loss']


def _quality_factor(x: Tensor, t: Tensor, exponent: float, stabilizer: str, eps: float,
                    activated: bool) -> Tensor:
    """``|t - p| ** exponent`` with ``p = x`` (activated) or ``sigmoid(x)``."""
    if activated:  # probabilities: no logit to take a log form from; zero-safe power
        return modulating_factor(exponent, stabilizer, eps, base=lambda: (t - x).abs())
    return modulating_factor(exponent, stabilizer, eps,
                             base=lambda: (t - torch.sigmoid(x)).abs(),
                             log_base=lambda: log_quality_base(  # -log(1 - p), -log(p)
                                 t, -F.logsigmoid(-x), -F.logsigmoid(x)).log_d)


def _bce(x: Tensor, t: Tensor, activated: bool, stabilizer: str) -> Tensor:
    if activated:
        return F.binary_cross_entropy(x, t, reduction='none')
    if stabilizer == 'exact':  # the true loss, to full precision (see logspace.exact_bce)
        return exact_bce(t, softplus(x), softplus(-x))
    return F.binary_cross_entropy_with_logits(x, t, reduction='none')  # mmdet's, verbatim


def _prepare(inputs: Tensor, targets: Tensor, exponent: float, exponent_name: str,
             reduction: str, stabilizer: str, eps: float):
    check_logits(inputs)
    check_same_shape(inputs, targets)
    if not targets.is_floating_point():  # mmdet converts integer/bool scores; so do we
        targets = targets.to(compute_dtype(inputs))
    check_probability_targets(targets)
    check_exponent(exponent, exponent_name)
    check_reduction(reduction)
    check_stabilizer(stabilizer)
    check_eps(eps)
    dtype = compute_dtype(inputs)
    return inputs.to(dtype), targets.to(dtype)


def quality_focal_loss(inputs: Tensor,
                       targets: Tensor,
                       beta: float = 2.0,
                       reduction: str = 'none',
                       *,
                       activated: bool = False,
                       stabilizer: str = 'exact',
                       eps: float = 1e-3) -> Tensor:
    """Element-wise QFL. ``targets`` holds the quality score of each (anchor, class) pair:
    0 for negatives, the IoU in (0, 1] for the positive class of a positive anchor.

    ``activated=True`` takes probabilities instead of logits (mmdet's ``activated``); inputs
    outside [0, 1] are then a ValueError naming ``inputs``."""
    x, t = _prepare(inputs, targets, beta, 'beta', reduction, stabilizer, eps)
    activated = check_flag(activated, 'activated')
    if activated:
        x = check_activated_inputs(x)
    if stabilizer == 'exact' and not activated and beta > 0:  # (beta 0: plain BCE)
        out = fused_loss('quality', x, t, (beta,), reduction)  # one pass, see .fused
        if out is not None:
            return out
    factor = _quality_factor(x, t, beta, stabilizer, eps, activated)
    loss = _bce(x, t, activated, stabilizer) * factor
    return reduce(loss, reduction)


def varifocal_loss(inputs: Tensor,
                   targets: Tensor,
                   alpha: float = 0.75,
                   gamma: float = 2.0,
                   iou_weighted: bool = True,
                   reduction: str = 'none',
                   *,
                   stabilizer: str = 'exact',
                   eps: float = 1e-3) -> Tensor:
    """Element-wise VFL on logits; ``targets`` are IoU-aware scores (0 for negatives)."""
    x, t = _prepare(inputs, targets, gamma, 'gamma', reduction, stabilizer, eps)
    alpha = check_non_negative(alpha, 'alpha')
    iou_weighted = check_flag(iou_weighted, 'iou_weighted')
    if stabilizer == 'exact':
        out = fused_loss('vfl', x, t, (alpha, gamma, float(iou_weighted)), reduction)
        if out is not None:  # loss and closed-form gradient in one pass, see .fused
            return out
    positive = (t > 0).to(x.dtype)
    # Negatives have t == 0, so their base is sigmoid(x); the clamp only matters with the
    # target check turned off, where it keeps log t finite for (invalid) negative scores.
    t_base = t.clamp(0, 1)
    negative_factor = alpha * _quality_factor(x, t_base, gamma, stabilizer, eps, False)
    positive_weight = t * positive if iou_weighted else positive
    focal_weight = positive_weight + negative_factor * (1 - positive)
    loss = _bce(x, t, False, stabilizer) * focal_weight
    return reduce(loss, reduction)
