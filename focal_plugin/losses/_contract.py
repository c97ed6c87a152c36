"""mmdet's loss-module contract in one place: reduction override, weight shapes, avg_factor.

Every registered loss computes an element-wise loss with :mod:`focal_plugin.functional` and
hands it to :func:`weighted_reduce`, which follows ``mmdet.models.losses.weight_reduce_loss``
(written out here: importing it would import all of ``mmdet.models`` and mmcv's compiled ops,
and the loss modules need only MMEngine; ``tests/losses`` compares the two when mmdet is
installed), with two differences users of mmdet rely on implicitly: a bad weight shape is a
``ValueError`` naming ``weight`` (mmdet asserts), and an empty loss (zero anchors) reduces to a
finite 0 with zero gradients (``mean`` of nothing is NaN in PyTorch).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..functional.validation import (
    DropInError,
    check_avg_factor,
    check_eps,
    check_loss_weight,
    check_reduction,
    check_stabilizer,
    check_weight_tensor,
)

__all__ = ['resolve_reduction', 'weighted_reduce', 'weight_reduce_loss', 'check_loss_weight',
           'set_common_arguments', 'InvalidReductionError']


class InvalidReductionError(DropInError):
    """A bad ``reduction_override`` (mmdet asserts on it)."""


def resolve_reduction(default: str, override: Optional[str]) -> str:
    if override is None:
        return default
    if override not in ('none', 'mean', 'sum'):
        raise InvalidReductionError(
            f"reduction_override must be None, 'none', 'mean' or 'sum', got {override!r}")
    return override


def set_common_arguments(module, reduction: str, loss_weight: float, stabilizer: str,
                         eps: float) -> None:
    """The arguments every loss module takes, checked by the functional rules when the model
    is built (a bad config fails there, with the same message a bad call would give)."""
    module.reduction = check_reduction(reduction)
    module.loss_weight = check_loss_weight(loss_weight)
    module.stabilizer = check_stabilizer(stabilizer)
    module.eps = check_eps(eps)


def _match_weight(weight: Tensor, loss: Tensor) -> Tensor:
    """``weight`` as a tensor that multiplies ``loss`` element by element, in the shapes mmdet
    accepts wherever their meaning is unambiguous:

    - the loss's own shape; one element of any shape (a scalar);
    - one weight per sample: ``(N,)``, or ``(N, 1, ...)`` (mmdet's ``FocalLoss`` views a
      weight whose first dimension is N as ``(N, 1)``);
    - the loss flattened in its own order, ``(N * C,)``, ``(N * C, 1)`` or ``(1, N * C)``
      (mmdet's flattened per-anchor-per-class weight, FSAF);
    - any shape of the loss's rank that broadcasts to it without growing it, e.g. ``(N, 1)``
      or ``(1, C)`` (``VarifocalLoss`` multiplies with broadcasting).

    Anything else is a ValueError naming ``weight``: in particular a weight with the loss's
    number of elements in another layout, e.g. ``(C, N)``, is not reshaped (mmdet's
    ``FocalLoss`` views it as ``(N, C)``, which puts every weight of a transposed weight on
    the wrong element), and a ``(C,)`` weight is not broadcast per class (its meaning would
    flip to per sample in a batch where N == C): pass ``(1, C)``."""
    shape = loss.shape
    if weight.shape == shape:
        return weight
    if weight.numel() == 1:
        return weight.reshape(())
    if loss.ndim >= 1 and weight.ndim >= 1 and weight.shape[0] == shape[0] == weight.numel():
        return weight.reshape((-1,) + (1,) * (loss.ndim - 1))
    if weight.numel() == loss.numel() and sum(d != 1 for d in weight.shape) == 1:
        return weight.reshape(shape)
    if weight.ndim == loss.ndim and all(w in (1, s) for w, s in zip(weight.shape, shape)):
        return weight
    n = shape[0] if loss.ndim else 1
    ones = ', 1' * (loss.ndim - 1)
    example = f' such as (1, {", ".join(str(s) for s in shape[1:])})' if loss.ndim > 1 else ''
    raise DropInError(  # (mmdet asserts, or fails to broadcast)
        f'weight of shape {tuple(weight.shape)} does not fit a loss of shape {tuple(shape)}: '
        f'expected {tuple(shape)}, one per sample ({n},) or ({n}{ones}), the loss flattened '
        f'({loss.numel()},), or a shape of rank {loss.ndim} that broadcasts to it{example} '
        f'(a weight with as many elements in another layout is not reshaped: transpose it)')


def weight_reduce_loss(loss: Tensor, weight: Optional[Tensor] = None, reduction: str = 'mean',
                       avg_factor: Optional[float] = None) -> Tensor:
    """mmdet's ``weight_reduce_loss``: weight element-wise, then reduce, or, with
    ``avg_factor``, sum and divide by ``avg_factor + eps`` (float32's eps: ``avg_factor=0`` is
    allowed on purpose, heads pass it when a batch has no positive)."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return loss if reduction == 'none' else loss.sum() if reduction == 'sum' else loss.mean()
    if reduction == 'mean':
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    if reduction != 'none':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    return loss


def weighted_reduce(loss: Tensor, weight: Optional[Tensor], reduction: str,
                    avg_factor: Optional[float]) -> Tensor:
    """The forward contract's arguments checked by the package's rules (weights finite and
    >= 0, ``avg_factor`` None or finite >= 0, without a host sync on CUDA), then mmdet's
    reduction."""
    avg_factor = check_avg_factor(avg_factor)
    if avg_factor is not None and reduction == 'sum':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    if weight is not None:
        weight = _match_weight(check_weight_tensor(weight), loss).to(loss.dtype)
    if loss.numel() == 0 and reduction == 'mean' and avg_factor is None:
        return loss.sum()  # zero anchors: a finite 0 that still belongs to the graph
    return weight_reduce_loss(loss, weight, reduction, avg_factor)
