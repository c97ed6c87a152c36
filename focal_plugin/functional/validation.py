"""Argument checks of the functional losses, one rule per argument, in one place.

Each raises a ``TypeError`` (wrong kind of value) or ``ValueError`` (out of range) naming the
argument. The loss modules (:mod:`focal_plugin.losses`) call the same functions when they are
built, so a bad config fails at model construction with the message a bad call would give.
"""
from __future__ import annotations

import math
from typing import Optional

from torch import Tensor

STABILIZERS = ('exact', 'epsilon', 'none')
REDUCTIONS = ('none', 'mean', 'sum')

__all__ = ['STABILIZERS', 'REDUCTIONS', 'DropInError', 'check_logits', 'check_same_shape',
           'check_alpha', 'check_non_negative',
           'check_stabilizer', 'check_exponent', 'check_eps', 'check_reduction']


class DropInError(ValueError, AssertionError):
    """A bad argument where mmdet ``assert``s: our standard is a ``ValueError`` naming the
    argument, and code written against mmdet (its own loss tests included) expects an
    ``AssertionError``. Being both keeps the losses drop-in."""


def check_logits(inputs: Tensor, name: str = 'inputs') -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(inputs).__name__}')
    if not inputs.is_floating_point():
        raise TypeError(f'{name} must be a floating point tensor of logits, got {inputs.dtype}')


def check_same_shape(inputs: Tensor, targets: Tensor, name: str = 'targets') -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(targets).__name__}')
    if targets.shape != inputs.shape:
        raise DropInError(f'{name} must have the shape of inputs {tuple(inputs.shape)}, '
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


def _one_of(value, name: str, choices: tuple):
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
    return value


def _finite_non_negative(value, name: str) -> float:
    """A finite real number >= 0 (bool is rejected: True is no gamma)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'{name} must be a real number, got {type(value).__name__}')
    if not math.isfinite(value) or value < 0:  # (mmdet asserts some of these, e.g. VFL alpha)
        raise DropInError(f'{name} must be finite and >= 0, got {value}')
    return float(value)


def check_non_negative(value: float, name: str) -> float:
    """A weight or scale (VFL's ``alpha``): finite and >= 0, no upper bound."""
    return _finite_non_negative(value, name)


def check_stabilizer(stabilizer: str) -> str:
    return _one_of(stabilizer, 'stabilizer', STABILIZERS)


def check_reduction(reduction: str) -> str:
    return _one_of(reduction, 'reduction', REDUCTIONS)


def check_exponent(value: float, name: str = 'gamma') -> float:
    """A focusing exponent (gamma, beta, delta, ...): finite and >= 0."""
    return _finite_non_negative(value, name)


def check_eps(eps: float) -> float:
    """The offset of ``'epsilon'`` mode: finite and >= 0."""
    return _finite_non_negative(eps, 'eps')
