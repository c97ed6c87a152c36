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
    """mmdet's accepted weight shapes: the loss's own, one per sample ``(N,)`` (broadcast
    over the remaining dims), or the loss flattened ``(N * C,)``."""
    if weight.shape == loss.shape:
        return weight
    if weight.ndim == 1 and loss.ndim >= 1 and weight.numel() == loss.shape[0]:
        return weight.view((-1,) + (1,) * (loss.ndim - 1))
    if weight.numel() == loss.numel():
        return weight.reshape(loss.shape)
    raise ValueError(f'weight of shape {tuple(weight.shape)} does not fit a loss of shape '
                     f'{tuple(loss.shape)}: expected {tuple(loss.shape)}, '
                     f'({loss.shape[0] if loss.ndim else 1},) or ({loss.numel()},)')


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
