"""Log-space building blocks of the ``'exact'`` stabilizer: the one home of the formulas.

With ``p = sigmoid(x)`` every focal-family loss on logits is built from two non-negative
numbers, the *negative log-likelihoods* of the two classes::

    nll_neg = -log(1 - p) = softplus(x),    nll_pos = -log(p) = softplus(-x)

Each function here takes that pair (not the logits), so the two callers compute it their
own way and share everything after it:

- the autograd formulations (:mod:`.sigmoid_focal`, :mod:`.generalized_focal`) pass
  :func:`softplus` values, whose backward autograd knows;
- the fused kernels (:mod:`.fused_kernels`) pass :func:`softplus_pair`, one ``exp`` and one
  ``log1p`` for both, and write the derivative out themselves.

Every result is finite (or an exact ``-inf`` where the true value is ``log 0``) for every
finite logit: nothing is computed as ``1 - (something close to 1)``.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['softplus', 'softplus_pair', 'signed_logit', 'exact_bce', 'log_one_minus_p_t',
           'LogQualityBase', 'log_quality_base', 'TargetSoftmaxLogs', 'target_softmax_logs']


def softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` for autograd, exact in float32 and float64. ``F.softplus``'s default
    threshold (20) returns ``x`` with slope 1 beyond it, a relative error of ``e^-20 ~ 2e-9``
    that float64 shows (its gradient ``sigmoid(20.5)`` came out as exactly 1); at 40, ``e^-x``
    is below float64's rounding of both. (Below the threshold: the same formula, same bits.)"""
    return F.softplus(x, beta=1.0, threshold=40.0)


def softplus_pair(x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(softplus(x), softplus(-x), exp(-|x|))`` from one exp and one log1p:
    ``softplus(+-x) = relu(+-x) + log1p(exp(-|x|))``. The third value is returned because the
    kernels build ``sigmoid(+-x)`` from it."""
    e = torch.exp(-x.abs())
    log1p_e = torch.log1p(e)
    return torch.relu(x) + log1p_e, torch.relu(-x) + log1p_e, e


def signed_logit(x: Tensor, positive: Tensor) -> Tensor:
    """``u = (2t - 1) x`` for a bool mask ``t`` of positives. Hard targets need nothing else:
    ``log(1 - p_t) = -softplus(u)`` and ``BCE(x, t) = softplus(-u)``."""
    return torch.where(positive, x, -x)


def exact_bce(t: Tensor, nll_neg: Tensor, nll_pos: Tensor) -> Tensor:
    """``BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x)``: a sum of two non-negative
    terms, so full relative precision even for confident correct predictions (where
    ``F.binary_cross_entropy_with_logits`` rounds ``log(1 + e^-|x|)`` and loses up to 1%)."""
    return t * nll_pos + (1 - t) * nll_neg


def log_one_minus_p_t(t: Tensor, nll_neg: Tensor, nll_pos: Tensor) -> Tensor:
    """``log(1 - p_t)`` for soft targets: ``1 - p_t = t (1 - p) + (1 - t) p`` is a sum of two
    non-negative terms, taken as a ``logaddexp`` of their logs, so it never rounds to
    ``log 0`` where ``1 - p_t`` is merely tiny."""
    return torch.logaddexp(torch.log(t) - nll_neg, torch.log1p(-t) - nll_pos)


class LogQualityBase(NamedTuple):
    """``log|t - p|`` (``-inf`` exactly at the cusp ``p == t``), the mask ``apart`` of
    elements off the cusp, and ``p_above`` (``p > t``, the sign of ``p - t``)."""
    log_d: Tensor
    apart: Tensor
    p_above: Tensor


def log_quality_base(t: Tensor, nll_neg: Tensor, nll_pos: Tensor) -> LogQualityBase:
    """``log|t - sigmoid(x)|``, the QFL/VFL base, without cancellation.

    ``t - p = t (1 - p) - (1 - t) p`` is a difference of two terms whose logs ``a, b`` are
    finite, so ``log|e^a - e^b| = max(a, b) + log(-expm1(-|a - b|))``. At ``a == b`` (the cusp
    ``p == t``) the value is ``-inf`` (base 0, so factor 0) and its gradient is 0: the
    ``where`` guards the *input* of ``log(-expm1(.))``, so the masked branch never evaluates
    ``1/0`` (the "double where")."""
    a = torch.log(t) - nll_neg       # log(t (1 - p))
    b = torch.log1p(-t) - nll_pos    # log((1 - t) p)
    gap = (a - b).abs()
    apart = gap > 0
    safe_gap = torch.where(apart, gap, torch.ones_like(gap))
    log_d = torch.maximum(a, b) + torch.log(-torch.expm1(-safe_gap))
    return LogQualityBase(torch.where(apart, log_d, torch.full_like(log_d, -float('inf'))),
                          apart, b > a)


class TargetSoftmaxLogs(NamedTuple):
    """Per pixel, of the labelled class y of a softmax: ``log p_y``, ``log(1 - p_y)``,
    ``p_y`` and ``log p_y / (1 - p_y)`` (the bounded ratio the focal gradient needs)."""
    log_p: Tensor
    log_1mp: Tensor
    p: Tensor
    log_p_over_1mp: Tensor


def target_softmax_logs(z_y: Tensor, others: Tensor) -> TargetSoftmaxLogs:
    """The softmax of the labelled class from the logits shifted by their maximum:
    ``z_y = x_y - max_j x_j`` (<= 0) and ``others = sum_{j != y} exp(z_j)`` (a sum of the
    other classes' terms, never ``S - exp(z_y)``).

    Two regimes, as :func:`.softmax_focal.softmax_margin`: where ``p_y > 1/2`` the label is
    the arg-max (``z_y = 0``, ``S = 1 + others``), so ``log p_y = -log1p(others)`` and
    ``log(1 - p_y) = log(others) - log1p(others)``: exact however close ``p_y`` is to 1.
    Elsewhere ``log p_y = z_y - log S`` (no cancellation, nothing of the size of the
    logits added back) and ``log(1 - p_y) = log1p(-p_y)`` with ``p_y <= 1/2``."""
    exp_zy = torch.exp(z_y)
    big = exp_zy > others
    log1p_others = torch.log1p(others)
    log_p = torch.where(big, -log1p_others, z_y - torch.log(exp_zy + others))
    p = torch.exp(log_p)
    log_1mp = torch.where(big, torch.log(others) - log1p_others, torch.log1p(-p))
    # log p / (1 - p): -log1p(o) (1 + o) / o -> -1 as o -> 0 (the "double where" keeps 0/0
    # out of the masked branch)
    has_others = others > 0
    safe = torch.where(has_others, others, torch.ones_like(others))
    ratio_big = torch.where(has_others, -log1p_others * (1 + safe) / safe, -torch.ones_like(safe))
    ratio = torch.where(big, ratio_big, log_p / (1 - p))
    return TargetSoftmaxLogs(log_p, log_1mp, p, ratio)
