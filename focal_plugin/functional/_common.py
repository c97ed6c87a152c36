"""Small shared pieces of the functional losses: input checks, dtype policy, reduction."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .stabilizer import check_reduction

__all__ = ['check_logits', 'check_same_shape', 'check_alpha', 'compute_dtype', 'reduce',
           'exact_focal_terms', 'exact_bce_with_logits', 'log_quality_base']


def check_logits(inputs: Tensor, name: str = 'inputs') -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(inputs).__name__}')
    if not inputs.is_floating_point():
        raise TypeError(f'{name} must be a floating point tensor of logits, got {inputs.dtype}')


def check_same_shape(inputs: Tensor, targets: Tensor, name: str = 'targets') -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(targets).__name__}')
    if targets.shape != inputs.shape:
        raise ValueError(f'{name} must have the shape of inputs {tuple(inputs.shape)}, '
                         f'got {tuple(targets.shape)}')


def check_alpha(alpha: Optional[float], allow_disabled: bool = True) -> Optional[float]:
    """alpha in [0, 1]; ``None`` or ``-1`` (torchvision's convention) disable the weighting."""
    if alpha is None or (allow_disabled and not isinstance(alpha, bool)
                         and isinstance(alpha, (int, float)) and alpha == -1):
        if not allow_disabled:
            raise ValueError('alpha must be in [0, 1], got None')
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f'alpha must be a real number, got {type(alpha).__name__}')
    if not 0.0 <= alpha <= 1.0:
        extra = ' (or -1/None to disable it)' if allow_disabled else ''
        raise ValueError(f'alpha must be in [0, 1]{extra}, got {alpha}')
    return float(alpha)


def compute_dtype(inputs: Tensor) -> torch.dtype:
    """Half-precision logits are computed in float32 (as autocast does for BCE-with-logits):
    the loss is a sum of many small terms and float16 cannot hold ``log(1 - p)`` for confident
    predictions. The loss comes back in float32; gradients flow back in the input dtype."""
    return torch.float32 if inputs.dtype in (torch.float16, torch.bfloat16) else inputs.dtype


def reduce(loss: Tensor, reduction: str) -> Tensor:
    """torchvision-style reduction; the mean of an empty tensor is 0 (not NaN), so a batch
    with zero anchors/pixels contributes a zero loss and zero gradients."""
    if reduction == 'none':
        return loss
    if reduction == 'sum' or loss.numel() == 0:
        return loss.sum()
    if reduction == 'mean':
        return loss.mean()
    check_reduction(reduction)
    raise AssertionError('unreachable')


def exact_focal_terms(x: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
    """``(BCE(x, t), log(1 - p_t))``, both to full relative precision for every finite logit.

    ``F.binary_cross_entropy_with_logits`` loses the digits of a confident correct prediction
    (``log(1 + e^-20)`` rounds to 0 in float32, and its backward ``sigmoid(x) - t`` cancels), so
    the cross-entropy is written with softplus: ``t * softplus(-x) + (1 - t) * softplus(x)``.
    ``1 - p_t = t * sigmoid(-x) + (1 - t) * sigmoid(x)`` is a sum of two positive terms, taken in
    log space so it never rounds to ``log 0`` (hard 0/1 targets have a cheaper form, see
    :func:`.sigmoid_focal.sigmoid_focal_loss`).
    """
    sp_pos, sp_neg = F.softplus(x), F.softplus(-x)  # -log(1 - p), -log(p)
    ce = exact_bce_with_logits(x, t, (sp_pos, sp_neg))
    return ce, torch.logaddexp(torch.log(t) - sp_pos, torch.log1p(-t) - sp_neg)


def exact_bce_with_logits(x: Tensor, t: Tensor,
                          softplus_pair: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    """``BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x)``: a sum of two non-negative
    terms, so full relative precision even for confident correct predictions (where
    ``F.binary_cross_entropy_with_logits`` rounds ``log(1 + e^-|x|)``)."""
    sp_pos, sp_neg = softplus_pair if softplus_pair is not None else (F.softplus(x),
                                                                      F.softplus(-x))
    return t * sp_neg + (1 - t) * sp_pos


def log_quality_base(x: Tensor, t: Tensor) -> Tensor:
    """``log|t - sigmoid(x)|`` (the QFL/VFL base), finite except at ``sigmoid(x) == t``.

    ``t - sigmoid(x) = t * sigmoid(-x) - (1 - t) * sigmoid(x)``: a difference of two terms
    whose logs ``a, b`` are finite, so ``log|e^a - e^b| = max(a, b) + log(-expm1(-|a - b|))``.
    At ``a == b`` (the cusp ``sigmoid(x) == t``) the result is ``-inf`` (base 0, factor 0) and
    the gradient there is 0: the ``where`` guards the *input* of ``log(-expm1(.))`` so the
    masked branch never evaluates ``1/0``.
    """
    logsig = F.logsigmoid
    a = torch.log(t) + logsig(-x)
    b = torch.log1p(-t) + logsig(x)
    gap = (a - b).abs()
    apart = gap > 0
    safe_gap = torch.where(apart, gap, torch.ones_like(gap))
    log_abs = torch.maximum(a, b) + torch.log(-torch.expm1(-safe_gap))
    return torch.where(apart, log_abs, torch.full_like(log_abs, -float('inf')))
