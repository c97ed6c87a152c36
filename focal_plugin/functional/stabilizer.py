"""The stabilizer: the one place that knows how a focal modulating factor is computed.

Every focal-family loss multiplies a per-element loss by a *modulating factor* ``b ** k`` whose
base ``b`` in [0, 1] measures how wrong a prediction is (``1 - p_t`` for the focal loss,
``|y - sigma(x)|`` for QFL/VFL, ``1 - TI`` for focal Tversky) and whose exponent ``k`` is the
focusing parameter (gamma, beta, or 1 - gamma). For 0 < k < 1 the derivative
``k * b ** (k - 1)`` is infinite at ``b == 0``; once a sigmoid saturates in floating point
(``b`` rounds to 0) autograd multiplies that infinity by the sigmoid's zero slope and the
gradient becomes NaN.

Three modes, selected by the ``stabilizer`` argument every loss takes:

``'exact'`` (default)
    The original loss, with finite gradients everywhere. When the caller can give
    ``log b`` in closed form (``logsigmoid`` of a signed logit, ...) the factor is
    ``exp(k * log b)``: the same value, and a derivative ``k * b**k * d(log b)`` in which
    the singular ``b ** (k - 1)`` never appears. Without a log form the base is raised with a
    zero-safe power whose gradient at exactly ``b == 0`` is defined as 0 (the loss term has a
    cusp minimum there, and 0 is in its subdifferential).
``'epsilon'``
    The published fix ``(b + eps) ** k`` (eps = 1e-3 by default). Finite, but it shifts
    every loss value.
``'none'``
    ``b ** k`` exactly as torchvision computes it. Kept on purpose to reproduce the failure.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .validation import STABILIZERS, check_stabilizer

__all__ = ['STABILIZERS', 'modulating_factor', 'zero_safe_pow']


def zero_safe_pow(base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent`` for ``base >= 0`` with a finite gradient at ``base == 0``.

    The value is exactly ``base ** exponent``. At ``base == 0`` the gradient is 0 for every
    exponent except 1 (where it is 1, the true derivative). The ``where`` is applied to the
    *input* of the power (the "double where"), so the masked branch never produces
    ``inf * 0`` in the backward pass.
    """
    if exponent == 0:
        return torch.ones_like(base)
    if exponent == 1:
        return base
    positive = base > 0
    safe_base = torch.where(positive, base, torch.ones_like(base))
    return torch.where(positive, safe_base.pow(exponent), torch.zeros_like(base))


def modulating_factor(exponent: float,
                      stabilizer: str,
                      eps: float,
                      base: Callable[[], Tensor],
                      log_base: Optional[Callable[[], Tensor]] = None,
                      exact_base: Optional[Callable[[], Tensor]] = None) -> Tensor:
    """``base ** exponent`` computed the way ``stabilizer`` says.

    Args:
        exponent: the focusing parameter (gamma, beta, 1 - gamma), >= 0.
        stabilizer: ``'exact'``, ``'epsilon'`` or ``'none'`` (see the module docstring).
        eps: the offset of ``'epsilon'`` mode.
        base: returns the base in [0, 1] as the original loss computes it (lazily: only the
            mode that needs it calls it).
        log_base: returns ``log(base)`` computed without cancellation or underflow, finite
            wherever the logits are finite. Preferred by ``'exact'`` mode when given.
        exact_base: returns the base in a cancellation-free form (e.g. ``(a + b) / d``
            instead of ``1 - c / d``), used by ``'exact'`` when there is no ``log_base``;
            defaults to ``base``.
    """
    if stabilizer == 'none':
        return base().pow(exponent)
    if stabilizer == 'epsilon':
        return (base() + eps).pow(exponent)
    if stabilizer != 'exact':
        check_stabilizer(stabilizer)
    if log_base is None:
        return zero_safe_pow((exact_base or base)(), exponent)
    if exponent == 0:
        # exp(0 * -inf) would be NaN where log_base is -inf; b ** 0 == 1 everywhere.
        return torch.ones_like(log_base())
    return torch.exp(exponent * log_base())
