"""Every argument check of the package's public entry points, one rule per kind of argument.

The functional losses, the registered loss modules (constructor and ``forward``) and
``GradientSanitizerHook``'s constructor all validate through these functions, so one kind of
argument gets one rule and one message wherever it is passed. Each raises a ``TypeError``
(wrong kind of value) or ``ValueError`` (out of range) naming the argument and what is
accepted. The kinds:

=====================  =====================================================================
exponent               gamma, beta: a real number, finite, >= 0
probability            delta, lambda, label_smoothing: a real number in [0, 1] (or [0, 1))
alpha                  as probability, or -1 / None: no weighting (torchvision's convention)
non-negative           VFL alpha, eps, Tversky smooth: finite and >= 0 (smooth: > 0)
loss_weight            finite; negative is allowed (deliberate) but warned about
choice                 reduction, stabilizer, variant, policy: one of a listed set
flag                   activated, iou_weighted, the hook's switches: a bool (0/1 accepted)
count                  the hook's intervals and limits: an int >= a minimum (or None)
ignore_index           an int (not bool, not float); compared without wrap-around
index labels           an integer tensor of class indices (bool is a mask, not classes)
class vector           per-class alpha / class_weight: one finite value >= 0 per class
weight tensor          per-element weights: finite and >= 0 (checked on the device)
avg_factor             None or a number / one-element tensor, finite and >= 0 (0 allowed)
=====================  =====================================================================

Checks of tensor *values* (weights, a tensor avg_factor, label ranges) follow
:mod:`.value_checks`: immediate on the CPU, deferred without a host synchronisation on CUDA.
Where mmdet is lenient and the value is not silently wrong, so are we (README, drop-in table).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .value_checks import check_values, plain_tensor, verdict_rule

STABILIZERS = ('exact', 'epsilon', 'none')
REDUCTIONS = ('none', 'mean', 'sum')

__all__ = ['STABILIZERS', 'REDUCTIONS', 'DropInError', 'check_logits', 'check_same_shape',
           'check_alpha', 'check_non_negative', 'check_positive', 'check_probability',
           'check_stabilizer', 'check_exponent', 'check_eps', 'check_reduction', 'check_choice',
           'check_loss_weight', 'check_flag', 'check_count', 'check_ignore_index',
           'not_ignored', 'check_index_labels', 'check_class_vector', 'check_weight_tensor',
           'check_avg_factor']


class DropInError(ValueError, AssertionError):
    """A bad argument where mmdet ``assert``s: our standard is a ``ValueError`` naming the
    argument, and code written against mmdet (its own loss tests included) expects an
    ``AssertionError``. Being both keeps the losses drop-in."""


def _type_name(value) -> str:
    return type(value).__name__


# --- numbers ---------------------------------------------------------------------------
def _real(value, name: str) -> float:
    """A real number (bool is rejected: True is no gamma); numpy scalars are fine."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{name} must be a real number, got {value!r} ({_type_name(value)})')
    return float(value)


def _finite_non_negative(value, name: str) -> float:
    value = _real(value, name)
    if not math.isfinite(value) or value < 0:  # (mmdet asserts some of these, e.g. VFL alpha)
        raise DropInError(f'{name} must be finite and >= 0, got {value}')
    return value


def check_exponent(value: float, name: str = 'gamma') -> float:
    """A focusing exponent (gamma, beta): finite and >= 0."""
    return _finite_non_negative(value, name)


def check_non_negative(value: float, name: str) -> float:
    """A weight or scale (VFL's ``alpha``): finite and >= 0, no upper bound."""
    return _finite_non_negative(value, name)


def check_positive(value: float, name: str) -> float:
    """Finite and > 0 (the Tversky smoothing: it is the 0/0 guard of an empty class)."""
    value = _real(value, name)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be finite and > 0, got {value}')
    return value


def check_eps(eps: float) -> float:
    """The offset of ``'epsilon'`` mode: finite and >= 0."""
    return _finite_non_negative(eps, 'eps')


def check_probability(value: float, name: str, open_above: bool = False) -> float:
    """A real number in [0, 1] (``open_above``: [0, 1))."""
    value = _real(value, name)
    if not (0.0 <= value < 1.0 if open_above else 0.0 <= value <= 1.0):  # NaN fails too
        raise ValueError(f'{name} must be in [0, {"1)" if open_above else "1]"}, got {value}')
    return value


def check_alpha(alpha: Optional[float], allow_disabled: bool = True) -> Optional[float]:
    """alpha in [0, 1]; ``None`` or ``-1`` (torchvision's convention) disable the weighting."""
    if alpha is None or (allow_disabled and not isinstance(alpha, bool)
                         and isinstance(alpha, numbers.Real) and alpha == -1):
        if not allow_disabled:
            raise ValueError('alpha must be in [0, 1], got None')
        return None
    alpha = _real(alpha, 'alpha')
    if not 0.0 <= alpha <= 1.0:
        extra = ' (or -1/None to disable it)' if allow_disabled else ''
        raise ValueError(f'alpha must be in [0, 1]{extra}, got {alpha}')
    return alpha


def check_loss_weight(loss_weight: float) -> float:
    """Finite; a negative loss_weight can be deliberate (an adversarial term): warned."""
    value = _real(loss_weight, 'loss_weight')
    if not math.isfinite(value):
        raise ValueError(f'loss_weight must be finite, got {value}')
    if value < 0:
        warnings.warn(f'loss_weight is negative ({value}): this loss will be maximised',
                      stacklevel=3)
    return value


# --- choices, flags, counts --------------------------------------------------------------
def check_choice(value, name: str, choices: tuple):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
    return value


def check_stabilizer(stabilizer: str) -> str:
    return check_choice(stabilizer, 'stabilizer', STABILIZERS)


def check_reduction(reduction: str) -> str:
    return check_choice(reduction, 'reduction', REDUCTIONS)


def check_flag(value, name: str) -> bool:
    """A bool; 0 and 1 are accepted (mmdet's configs sometimes write them), nothing else
    (``'False'`` would be true)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f'{name} must be a bool, got {value!r} ({_type_name(value)})')


def check_count(value, name: str, minimum: int, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f'{name} must be an int{" or None" if allow_none else ""}, '
                        f'got {value!r} ({_type_name(value)})')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}')
    return int(value)


# --- labels --------------------------------------------------------------------------------
def check_ignore_index(value, name: str = 'ignore_index') -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f'{name} must be an int (a label value that no class uses), got '
                        f'{value!r} ({_type_name(value)})')
    return int(value)


def not_ignored(labels: Tensor, ignore_index: int) -> Tensor:
    """``labels != ignore_index`` without wrap-around: for uint8 masks ``!= 256`` would compare
    with 0 and drop every class-0 pixel. A value the dtype cannot hold ignores nothing."""
    if not labels.is_floating_point():
        info = torch.iinfo(labels.dtype)
        if not info.min <= ignore_index <= info.max:
            return torch.ones_like(labels, dtype=torch.bool)
    return labels != ignore_index


def check_index_labels(labels, name: str = 'targets') -> Tensor:
    """An integer tensor of class indices. bool is refused: an "is positive" mask read as
    classes 0 and 1 would train every negative as class 0 (mmdet and ``F.cross_entropy``
    refuse it too)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of class indices, got '
                        f'{_type_name(labels)}')
    if labels.dtype == torch.bool:
        raise TypeError(f'{name} must hold class indices, got a bool tensor (a mask?): pass '
                        f'integer class indices (e.g. mask.long() if True means class 1)')
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f'{name} must be an integer tensor of class indices, got {labels.dtype}')
    return labels


# --- tensors of values -----------------------------------------------------------------------
def check_logits(inputs: Tensor, name: str = 'inputs') -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {_type_name(inputs)}')
    if not inputs.is_floating_point():
        raise TypeError(f'{name} must be a floating point tensor of logits, got {inputs.dtype}')


def check_same_shape(inputs: Tensor, targets: Tensor, name: str = 'targets') -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {_type_name(targets)}')
    if targets.shape != inputs.shape:
        raise DropInError(f'{name} must have the shape of inputs {tuple(inputs.shape)}, '
                          f'got {tuple(targets.shape)}')


def _finite_non_negative_values(values: Tensor, name: str) -> None:
    """Raise unless every value is finite and >= 0: one min/max pass, judged at once on the
    CPU and without a host synchronisation on CUDA (:mod:`.value_checks`)."""
    if values.numel() == 0:
        return
    lo, hi = torch.aminmax(plain_tensor(values.detach()).double())
    check_values(torch.stack([lo, hi]), 'finite non-negative', name)


@verdict_rule('finite non-negative')
def _finite_non_negative_verdict(name: str):
    def verdict(v):
        if v[0] >= 0 and v[1] < math.inf:  # NaN fails both
            return None
        return f'{name} must be finite and >= 0, got min {v[0]:g}, max {v[1]:g}'
    return verdict


def check_weight_tensor(weight, name: str = 'weight') -> Tensor:
    """Per-element weights: a tensor (bool and integer weights are fine: converted), every
    value finite and >= 0 (a NaN weight is a NaN loss the gradient hook would blame on the
    model)."""
    if not isinstance(weight, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {_type_name(weight)}')
    if weight.is_complex():
        raise TypeError(f'{name} must be real, got {weight.dtype}')
    if weight.dtype != torch.bool:  # (integer weights can still be negative)
        _finite_non_negative_values(weight, name)
    return weight


def check_class_vector(value: Union[float, Sequence[float], Tensor, None], num_classes: int,
                       name: str, like: Tensor) -> Optional[Tensor]:
    """None, a scalar or one value per class, each finite and >= 0, as a tensor like ``like``.
    Python values are checked on the host before they move to the device."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool)) or not (
            isinstance(value, (Tensor, numbers.Real)) or hasattr(value, '__len__')):
        raise TypeError(f'{name} must be a number, a sequence of numbers or a tensor, got '
                        f'{value!r} ({_type_name(value)})')
    try:
        vec = value if isinstance(value, Tensor) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f'{name} must be numbers, got {value!r}: {err}') from None
    if vec.dtype == torch.bool or vec.is_complex():
        raise TypeError(f'{name} must be real numbers, got {vec.dtype}')
    if vec.ndim == 0:
        vec = vec.expand(num_classes)
    if vec.shape != (num_classes,):
        raise ValueError(f'{name} must be a scalar or have {num_classes} entries (one per '
                         f'class), got shape {tuple(vec.shape)}')
    _finite_non_negative_values(vec, name)
    return vec.to(device=like.device, dtype=like.dtype)


def check_avg_factor(avg_factor) -> Union[None, float, Tensor]:
    """None, or a number / one-element tensor, finite and >= 0. 0 is accepted on purpose:
    mmdet divides by ``avg_factor + eps`` and its heads pass 0 when a batch has no positive."""
    if avg_factor is None:
        return None
    if isinstance(avg_factor, Tensor):
        if avg_factor.numel() != 1 or avg_factor.dtype == torch.bool or avg_factor.is_complex():
            raise TypeError(f'avg_factor must be a number or a one-element real tensor, got '
                            f'{avg_factor.dtype} of shape {tuple(avg_factor.shape)}')
        _finite_non_negative_values(avg_factor, 'avg_factor')
        return avg_factor
    return _finite_non_negative(avg_factor, 'avg_factor')
