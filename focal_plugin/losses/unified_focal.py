"""Unified Focal Loss (Yeung et al. 2022) and its components as registered modules."""
from __future__ import annotations

import inspect

import torch.nn as nn
from torch import Tensor

from ..functional import asymmetric_focal_loss, focal_tversky_loss, unified_focal_loss
from ..functional.unified_focal import UFL_VARIANTS
from ..functional.validation import (
    check_choice,
    check_eps,
    check_exponent,
    check_ignore_index,
    check_logits,
    check_loss_weight,
    check_positive,
    check_probability,
    check_stabilizer,
)
from ..registry import register_model

__all__ = ['UnifiedFocalLoss', 'StableAsymmetricFocalLoss', 'StableFocalTverskyLoss']


class _SegmentationLoss(nn.Module):
    """Shared constructor: validates the paper's hyper-parameters once."""
    has_tversky_term = True  # then gamma <= 1: the Tversky exponent is 1 - gamma

    def __init__(self, delta: float = 0.6, gamma: float = 0.5, variant: str = 'asymmetric',
                 ignore_index: int = 255, loss_weight: float = 1.0,
                 stabilizer: str = 'exact', eps: float = 1e-3, **extra) -> None:
        super().__init__()
        unknown = sorted(set(extra) - set(inspect.signature(type(self).loss_fn).parameters))
        if unknown:  # (the options reach the loss function as keywords at every call)
            raise TypeError(f'{type(self).__name__} got unknown argument(s) {unknown}')
        if check_exponent(gamma, 'gamma') > 1.0 and self.has_tversky_term:
            raise ValueError(f'gamma must be in [0, 1] for a loss with a Tversky term (its '
                             f'exponent is 1 - gamma), got {gamma}')
        self.loss_weight = check_loss_weight(loss_weight)
        self.kwargs = dict(delta=check_probability(delta, 'delta'), gamma=float(gamma),
                           variant=check_choice(variant, 'variant', UFL_VARIANTS),
                           ignore_index=check_ignore_index(ignore_index),
                           stabilizer=check_stabilizer(stabilizer), eps=check_eps(eps),
                           **extra)

    loss_fn = None  # set by subclasses

    def forward(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        """``pred``: logits (N, C, H, W) (C = 1: sigmoid, binary); ``target``: labels
        (N, H, W) or (N, 1, H, W) with 0 = background and ``ignore_index`` skipped. Extra
        keyword arguments of mmseg/mmdet callers (``weight``, ``avg_factor``...) are not
        meaningful for a region loss and are rejected if given."""
        check_logits(pred, 'pred')
        unused = {k: v for k, v in kwargs.items() if v is not None}
        if unused:
            raise TypeError(f'{type(self).__name__} does not take {sorted(unused)}')
        return self.loss_weight * type(self).loss_fn(pred, target, **self.kwargs)

    def extra_repr(self) -> str:
        return ', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())


@register_model
class UnifiedFocalLoss(_SegmentationLoss):
    """``weight * focal_Tversky + (1 - weight) * focal`` for imbalanced segmentation.

    Args:
        variant: 'asymmetric' (default) | 'symmetric'. weight: lambda in [0, 1].
        delta: 0.6, gamma: 0.5 (the paper's defaults; gamma in [0, 1]).
        ignore_index: label ignored by both terms. smooth: Tversky smoothing (1e-7, the
            authors' value; it decides the loss of images without foreground).
        stabilizer, eps: see :mod:`focal_plugin.functional.stabilizer`.
    """
    loss_fn = staticmethod(unified_focal_loss)

    def __init__(self, variant: str = 'asymmetric', weight: float = 0.5, delta: float = 0.6,
                 gamma: float = 0.5, ignore_index: int = 255, smooth: float = 1e-7,
                 loss_weight: float = 1.0, stabilizer: str = 'exact',
                 eps: float = 1e-3) -> None:
        super().__init__(delta, gamma, variant, ignore_index, loss_weight, stabilizer, eps,
                         weight=check_probability(weight, 'weight (lambda)'),
                         smooth=check_positive(smooth, 'smooth'))


@register_model
class StableAsymmetricFocalLoss(_SegmentationLoss):
    """The focal (cross-entropy) component of the unified focal loss on its own (any
    gamma >= 0, as the authors' ``asymmetric_focal_loss``, whose default is 2)."""
    loss_fn = staticmethod(asymmetric_focal_loss)
    has_tversky_term = False


@register_model
class StableFocalTverskyLoss(_SegmentationLoss):
    """The focal Tversky (region) component of the unified focal loss on its own."""
    loss_fn = staticmethod(focal_tversky_loss)

    def __init__(self, smooth: float = 1e-7, **kwargs) -> None:
        super().__init__(smooth=check_positive(smooth, 'smooth'), **kwargs)

