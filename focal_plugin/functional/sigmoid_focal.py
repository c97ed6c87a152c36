"""Sigmoid (binary / multi-label) focal loss, a drop-in for ``torchvision.ops.sigmoid_focal_loss``.

Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, https://arxiv.org/abs/1708.02002

    FL(x, t) = alpha_t * (1 - p_t) ** gamma * BCE(x, t),
    p = sigmoid(x),  p_t = p * t + (1 - p) * (1 - t),  alpha_t = alpha * t + (1 - alpha) * (1 - t)

``(1 - p_t) ** gamma`` is the modulating factor handled by :mod:`.stabilizer`. In ``'exact'``
mode its log is ``logsigmoid((1 - 2t) * x)`` for hard targets and the log-sum of the two target
branches for soft ones, so confident predictions neither round ``1 - p_t`` to 0 nor produce NaN.

Note on ``'none'``: it is torchvision's formula, where ``1 - p_t`` is ``1 - (1 - p)`` for a
negative. In float32 that rounds to 0 as soon as ``p`` rounds to 0 relative to 1, i.e. for
logits below about -16.6, while mmdet's Python ``py_sigmoid_focal_loss`` uses ``p`` directly and
only reaches 0 below about -88.7 (where ``sigmoid`` underflows). The published NaN failures come
from torchvision's form; the two "original" losses fail at very different points in training.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import compute_dtype, reduce
from .fused import fused_loss, needs_grad
from .logspace import exact_bce, log_one_minus_p_t, signed_logit, softplus
from .stabilizer import modulating_factor
from .targets import check_activated_inputs, check_label_range, check_probability_targets
from .validation import (
    check_alpha,
    check_eps,
    check_exponent,
    check_flag,
    check_logits,
    check_reduction,
    check_same_shape,
    check_stabilizer,
)

__all__ = ['sigmoid_focal_loss']


def _hard_labels(targets: Tensor, detect_in_floats: bool) -> Optional[Tensor]:
    """Targets as a bool mask of positives when they are hard labels, else None.

    Bool targets are used as they are; integer targets must be 0/1 (ValueError otherwise). Float
    targets must be probabilities in [0, 1] (ValueError naming the likely cause otherwise); on
    the CPU the same host read finds out whether they are all 0/1, which buys the cheaper
    hard-label path (only asked where that path exists; on CUDA nothing is read on the host,
    and float targets take the soft path, exact for 0/1 too: see :mod:`.value_checks`).
    Float targets that need a gradient are never read as labels: a mask has no gradient, and
    the targets' graph (a learnable label smoothing at 0, a teacher's scores) would be cut."""
    if targets.dtype == torch.bool:
        return targets
    if not targets.is_floating_point():
        check_label_range(targets, 0, 1, 'integer targets', ' (hard labels 0 or 1)')
        return targets.bool()
    if check_probability_targets(targets, detect_hard=detect_in_floats
                                 and not needs_grad(targets)):
        return targets.bool()
    return None


def sigmoid_focal_loss(inputs: Tensor,
                       targets: Tensor,
                       alpha: Optional[float] = 0.25,
                       gamma: float = 2.0,
                       reduction: str = 'none',
                       *,
                       stabilizer: str = 'exact',
                       eps: float = 1e-3,
                       activated: bool = False) -> Tensor:
    """Focal loss on logits, element-wise, with the same signature as torchvision's.

    Args:
        inputs: logits of any shape (floating point).
        targets: same shape; floats in [0, 1] (hard or soft labels; anything else, NaN
            included, is a ValueError, see :mod:`.targets`), or integer/bool 0/1 labels.
            All-0/1 targets take a cheaper exact path (one logsigmoid of the signed
            logit instead of a log-sum of two branches).
        alpha: weight of the positive class in [0, 1]; ``-1`` (torchvision) or ``None``
            disables the weighting.
        gamma: focusing parameter, >= 0.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        stabilizer: ``'exact'`` (default) | ``'epsilon'`` | ``'none'`` (see :mod:`.stabilizer`).
        eps: offset of ``'epsilon'`` mode.
        activated: ``inputs`` are probabilities, not logits (mmdet's ``activated=True``).
            There is no logit to take a log form from, so ``'exact'`` uses the zero-safe
            power: exact values, finite gradients where ``1 - p_t`` is exactly 0. Inputs
            outside [0, 1] (logits passed by mistake) are a ValueError naming ``inputs``.

    Returns:
        The loss, element-wise or reduced. 16-bit inputs are computed and returned in float32.
    """
    check_logits(inputs)
    check_same_shape(inputs, targets)
    alpha = check_alpha(alpha)
    gamma = check_exponent(gamma, 'gamma')
    check_reduction(reduction)
    check_stabilizer(stabilizer)
    eps = check_eps(eps)
    activated = check_flag(activated, 'activated')

    if activated:
        inputs = check_activated_inputs(inputs)
    exact_logits = stabilizer == 'exact' and not activated
    positive = _hard_labels(targets, detect_in_floats=exact_logits)
    dtype = compute_dtype(inputs)
    x = inputs.to(dtype)
    if exact_logits:
        # loss and closed-form gradient in one pass: the fast path, see .fused
        a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
        out = fused_loss('focal', x, positive if positive is not None else targets.to(dtype),
                         (a_pos, a_neg, gamma), reduction)
        if out is not None:
            return out
    if exact_logits and positive is not None:
        # Hard labels: 1 - p_t = sigmoid(-u) and BCE = softplus(-u) with the signed logit
        # u = x for positives, -x for negatives. A handful of element-wise passes, fewer
        # than torchvision's formula.
        u = signed_logit(x, positive)
        factor = modulating_factor(gamma, stabilizer, eps, base=lambda: torch.sigmoid(-u),
                                   log_base=lambda: -softplus(u))
        loss = softplus(-u) * factor
        if alpha is not None:
            loss = loss * torch.where(positive, x.new_tensor(alpha), x.new_tensor(1 - alpha))
        return reduce(loss, reduction)
    t = targets.to(dtype)

    def one_minus_p_t() -> Tensor:  # torchvision's expression, kept verbatim for 'none'
        p = x if activated else torch.sigmoid(x)
        p_t = p * t + (1 - p) * (1 - t)
        return 1 - p_t

    if activated:
        ce = F.binary_cross_entropy(x, t, reduction='none')
        # mmdet's form of 1 - p_t, without the 1 - (1 - p) cancellation
        forms = dict(exact_base=lambda: (1 - x) * t + x * (1 - t))
    elif stabilizer == 'exact':
        # 'exact' means the true loss: a full-precision cross-entropy goes with the exact
        # factor (torchvision's BCE is off by up to 1% at confident logits, see the helper).
        nll_neg, nll_pos = softplus(x), softplus(-x)  # -log(1 - p), -log(p)
        ce = exact_bce(t, nll_neg, nll_pos)
        forms = dict(log_base=lambda: log_one_minus_p_t(t, nll_neg, nll_pos))
    else:  # 'none' / 'epsilon' are torchvision's formula (+ eps), verbatim
        ce = F.binary_cross_entropy_with_logits(x, t, reduction='none')
        forms = {}
    loss = ce * modulating_factor(gamma, stabilizer, eps, base=one_minus_p_t, **forms)
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return reduce(loss, reduction)
