"""The fused kernels: loss and closed-form gradient of the ``'exact'`` losses, in one pass.

Plain element-wise torch functions of 1-D tensors (compiled by :mod:`.compile_backend`, or run
as they are). Their log-space pieces come from :mod:`.logspace`, the same functions the
autograd formulations use; what is added here is the derivative, written out with the singular
factor already cancelled.

Hard targets, signed logit ``u = (2t - 1) x``, ``m = 1 - p_t = sigmoid(-u)``::

    loss  = alpha_t * exp(-gamma * softplus(u)) * softplus(-u)
    dL/du = alpha_t * exp(-gamma * softplus(u)) * (-gamma * (1 - m) * softplus(-u) - m)

Soft targets, ``b = 1 - p_t = t (1 - p) + (1 - t) p``, ``r = p (1 - p) / b`` (taken in log
space, so it stays finite where ``b`` underflows)::

    loss  = alpha_t * b**gamma * BCE(x, t)
    dL/dx = alpha_t * b**gamma * ((p - t) + gamma * BCE(x, t) * (1 - 2t) * r)

Every term is bounded: the ``gamma * b**(gamma - 1)`` of the chain rule never appears.
QFL's and VFL's closed forms are in :func:`quality_loss` and :func:`vfl_loss`.

Targets that need a gradient (distillation scores, learnable label smoothing, an IoU left
attached) get one in closed form too (``with_target_grad``): ``dBCE/dt = -x`` exactly, and
the factor's ``b**(gamma - 1)`` appears only as ``b**gamma * (BCE / b)``, where ``BCE / b``
lies in ``[1, 1 + |x|]`` (``b <= BCE``: ``-log(1 - b') >= b'`` term by term) and is taken as
``exp(log BCE - log b)``. Autograd through ``log(t)`` instead gives ``0 * inf = NaN`` at every
exact 0/1 target.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import Tensor

from .logspace import exact_bce, log_one_minus_p_t, log_quality_base, signed_logit, softplus_pair

__all__ = ['KERNELS', 'LOSS_ONLY', 'hard_loss', 'soft_loss', 'quality_loss', 'vfl_loss',
           'sample_args']

# exp() arguments are capped below overflow where a true slope is huge but finite
_CAP = {torch.float32: 80.0, torch.float64: 700.0}


def _sigmoid_terms(x: Tensor, t: Tensor, e: Tensor):
    """``1 / (1 + e)`` (``e = exp(-|x|)``) and ``p - t`` in one subtraction of two accurate
    terms: ``(1 - t) - (1 - p)`` for ``p > 1/2``, where ``1 - p`` computed as
    ``1 - sigmoid(x)`` would round to 0 at confident logits."""
    inv = 1 / (1 + e)
    return inv, torch.where(x >= 0, (1 - t) - e * inv, inv * e - t)


def hard_loss(x: Tensor, positive: Tensor, a_pos: float, a_neg: float, gamma: float,
              with_grad: bool = False):
    """Loss (and, ``with_grad``, dloss/dx) for a bool mask of positives."""
    u = signed_logit(x, positive)
    sp_u, ce, e = softplus_pair(u)  # softplus(u) = -log(1 - p_t), softplus(-u) = BCE
    factor = torch.exp(-gamma * sp_u)
    loss = factor * ce
    loss = torch.where(positive, a_pos * loss, a_neg * loss)  # scalars keep x's dtype
    if not with_grad:
        return loss
    inv = 1 / (1 + e)
    big = u >= 0
    m = torch.where(big, e * inv, inv)            # sigmoid(-u) = 1 - p_t
    one_minus_m = torch.where(big, inv, e * inv)  # sigmoid(u), without the 1 - m cancellation
    d_u = factor * (-gamma * one_minus_m * ce - m)
    return loss, torch.where(positive, a_pos * d_u, -a_neg * d_u)  # dL/dx = (2t - 1) dL/du


def soft_loss(x: Tensor, t: Tensor, a_pos: float, a_neg: float, gamma: float,
              with_grad: bool = False, with_target_grad: bool = False):
    """Loss (and, ``with_grad``, dloss/dx; ``with_target_grad``, dloss/dt as well) for soft
    targets ``t`` in [0, 1]."""
    nll_neg, nll_pos, e = softplus_pair(x)  # -log(1 - p), -log(p)
    ce = exact_bce(t, nll_neg, nll_pos)
    log_b = log_one_minus_p_t(t, nll_neg, nll_pos)
    alpha_t = a_pos * t + a_neg * (1 - t)
    factor = torch.exp(gamma * log_b)
    weighted_factor = alpha_t * factor
    loss = weighted_factor * ce
    if not (with_grad or with_target_grad):
        return loss
    _, p_minus_t = _sigmoid_terms(x, t, e)
    r = torch.exp(-nll_neg - nll_pos - log_b)  # p (1 - p) / b
    d_x = weighted_factor * (p_minus_t + gamma * ce * (1 - 2 * t) * r)
    if not with_target_grad:
        return loss, d_x
    # d/dt of alpha_t b**gamma BCE, with db/dt = (1 - p) - p = -tanh(x / 2), dBCE/dt = -x
    ce_over_b = torch.exp(torch.log(ce) - log_b)
    d_t = factor * ((a_pos - a_neg) * ce - alpha_t * x
                    - alpha_t * gamma * torch.tanh(x / 2) * ce_over_b)
    return loss, d_x, d_t


def quality_loss(x: Tensor, y: Tensor, beta: float, with_grad: bool = False,
                 with_target_grad: bool = False):
    """QFL ``BCE(x, y) * |y - p|**beta`` (and, ``with_grad``, dloss/dx) for scores ``y``,
    ``beta > 0`` (``beta == 0`` is plain BCE: the caller keeps it on the reference path, so the
    compiled kernel never branches on the value of ``beta``).

    With ``D = |y - p|`` and ``s = sign(p - y)``: ``dL/dx = s (D**(beta + 1)
    + beta * BCE * p (1 - p) * D**(beta - 1))``, both terms taken from ``log D``
    (:func:`.logspace.log_quality_base`). At the cusp ``D == 0`` the gradient is 0, as in the
    autograd formulation. ``dL/dy = -x D**beta - s beta BCE D**(beta - 1)``, the second term
    from ``log BCE + (beta - 1) log D`` (at ``y = 0``: ``BCE ~ D``, finite), 0 at the cusp."""
    nll_neg, nll_pos, _ = softplus_pair(x)
    ce = exact_bce(y, nll_neg, nll_pos)
    log_d, apart, p_above = log_quality_base(y, nll_neg, nll_pos)
    factor = torch.where(apart, torch.exp(beta * log_d), 0.0)  # |0|**beta, beta > 0
    loss = ce * factor
    if not (with_grad or with_target_grad):
        return loss
    # D**(beta - 1) p (1 - p), capped below overflow: only reached for small beta within float
    # rounding of the cusp, where the true slope is huge; finite beats inf there
    cap = _CAP.get(x.dtype, 80.0)
    slope = torch.exp(torch.clamp((beta - 1) * log_d - nll_neg - nll_pos, max=cap))
    d_x = torch.exp((beta + 1) * log_d) + beta * ce * slope
    d_x = torch.where(apart, torch.where(p_above, d_x, -d_x), 0.0)
    if not with_target_grad:
        return loss, d_x
    slope_t = beta * torch.exp(torch.clamp(torch.log(ce) + (beta - 1) * log_d, max=cap))
    d_t = torch.where(apart, -x * factor + torch.where(p_above, -slope_t, slope_t), 0.0)
    return loss, d_x, d_t


def vfl_loss(x: Tensor, t: Tensor, alpha: float, gamma: float, iou_weighted: float,
             with_grad: bool = False, with_target_grad: bool = False):
    """VFL (and, ``with_grad``, dloss/dx): ``BCE(x, t) * w`` with ``w = t`` (``iou_weighted``
    1.0; else 1) for positives ``t > 0`` and ``alpha * p**gamma`` for negatives, where
    ``dL/dx = alpha p**gamma ((p - t) + gamma (1 - p) BCE)``. ``p**gamma`` is
    ``exp(-gamma * softplus(-x))``: no singular power. ``iou_weighted`` is a float so that the
    compiled kernel has no branch on it.

    ``dL/dt``: ``iou_weighted * BCE - w x`` for positives; at a negative (``t = 0``, where the
    loss jumps to the positive branch) the derivative of the negative branch
    ``alpha |p - t|**gamma BCE``, ``-alpha p**gamma (x + gamma BCE / p)``, as autograd
    through mmdet's formula gives it (``BCE / p`` in ``[1, 1 + |x|]``, from logs)."""
    nll_neg, nll_pos, e = softplus_pair(x)
    ce = exact_bce(t, nll_neg, nll_pos)
    positive = t > 0
    pos_weight = iou_weighted * t + (1 - iou_weighted)
    neg_factor = alpha * torch.exp(-gamma * nll_pos)
    loss = ce * torch.where(positive, pos_weight, neg_factor)
    if not (with_grad or with_target_grad):
        return loss
    inv, p_minus_t = _sigmoid_terms(x, t, e)
    d_neg = neg_factor * (p_minus_t + gamma * torch.where(x >= 0, e * inv, inv) * ce)
    d_x = torch.where(positive, pos_weight * p_minus_t, d_neg)
    if not with_target_grad:
        return loss, d_x
    d_t_neg = -neg_factor * (x + gamma * torch.exp(torch.log(ce) + nll_pos))
    return loss, d_x, torch.where(positive, iou_weighted * ce - pos_weight * x, d_t_neg)


# The loss-and-gradient entry points are separate functions, not closures of one factory:
# the compiler caches (and limits recompilations) per code object.
def hard_loss_and_grad(x, positive, a_pos, a_neg, gamma):
    return hard_loss(x, positive, a_pos, a_neg, gamma, with_grad=True)


def soft_loss_and_grad(x, t, a_pos, a_neg, gamma):
    return soft_loss(x, t, a_pos, a_neg, gamma, with_grad=True)


def quality_loss_and_grad(x, y, beta):
    return quality_loss(x, y, beta, with_grad=True)


def vfl_loss_and_grad(x, t, alpha, gamma, iou_weighted):
    return vfl_loss(x, t, alpha, gamma, iou_weighted, with_grad=True)


# ... and with the gradient to the targets as well (targets that require grad)
def soft_loss_and_grads(x, t, a_pos, a_neg, gamma):
    return soft_loss(x, t, a_pos, a_neg, gamma, with_grad=True, with_target_grad=True)


def quality_loss_and_grads(x, y, beta):
    return quality_loss(x, y, beta, with_grad=True, with_target_grad=True)


def vfl_loss_and_grads(x, t, alpha, gamma, iou_weighted):
    return vfl_loss(x, t, alpha, gamma, iou_weighted, with_grad=True, with_target_grad=True)


# name -> kernel; the name is also the compile cache key (see .compile_backend)
KERNELS: Dict[str, Callable] = {fn.__name__: fn for fn in (
    hard_loss, hard_loss_and_grad, soft_loss, soft_loss_and_grad, soft_loss_and_grads,
    quality_loss, quality_loss_and_grad, quality_loss_and_grads, vfl_loss, vfl_loss_and_grad,
    vfl_loss_and_grads)}


# kernel name -> the loss-only function whose ``with_grad`` form it is (the backward of a
# ``create_graph`` pass differentiates that closed form with autograd)
LOSS_ONLY: Dict[str, Callable] = {name: KERNELS[name.split('_and_grad')[0]] for name in KERNELS}


def sample_args(name: str, dtype: torch.dtype, device: str, n: int) -> tuple:
    """Arguments of kernel ``name`` for ``n`` elements (to compile it ahead of use). ``n`` must
    not be 0 or 1, which dynamo would specialize."""
    x = torch.linspace(-5, 5, n, dtype=dtype, device=device)
    t = (torch.arange(n, device=device) % 3 == 0)
    t = t if name.startswith('hard') else t.to(dtype) * 0.8 + 0.1
    if name.startswith('quality'):
        return x, t, 1.5
    if name.startswith('vfl'):
        return x, t * (torch.arange(n, device=device) % 2), 0.75, 1.5, 1.0
    return x, t, 0.25, 0.75, 1.5
