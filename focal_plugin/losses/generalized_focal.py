"""Stable Quality Focal Loss and Varifocal Loss, drop-ins for mmdet's modules."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ..functional import quality_focal_loss, varifocal_loss
from ..functional.targets import check_label_range
from ..functional.validation import (
    DropInError,
    check_exponent,
    check_flag,
    check_index_labels,
    check_logits,
    check_non_negative,
)
from ..registry import register_model
from ._contract import resolve_reduction, set_common_arguments, weighted_reduce
from ._frameworks import FrameworkLoss

__all__ = ['StableQualityFocalLoss', 'StableVarifocalLoss']


def dense_quality_target(pred: Tensor, target: Tuple[Tensor, Tensor]) -> Tensor:
    """mmdet's tuple target ``(labels (N,), scores (N,))`` -> the dense (N, C) score map:
    ``score`` at (i, label_i) for foreground labels, 0 elsewhere. As in mmdet, label C and
    negative labels (-1, "ignored") are background and float labels are taken as class
    indices; labels above C, or float labels that are not whole numbers, are errors (mmdet
    would silently treat them as background / truncate them)."""
    if len(target) != 2:
        raise ValueError('a tuple target for QFL must be (labels, scores)')
    labels, scores = target
    if not isinstance(labels, Tensor) or not isinstance(scores, Tensor):
        raise TypeError('a tuple target for QFL must be (labels, scores) tensors, got '
                        f'({type(labels).__name__}, {type(scores).__name__})')
    if not labels.is_floating_point():  # float labels: mmdet converts them, so do we
        check_index_labels(labels, 'labels')
    num, num_classes = pred.shape
    if labels.shape != (num,) or scores.shape != (num,):
        raise ValueError(f'labels and scores must both have shape ({num},), got '
                         f'{tuple(labels.shape)} and {tuple(scores.shape)}')
    check_label_range(labels, None, num_classes, 'labels',
                      f' ({num_classes} and negative labels = background)')
    dtype = scores.dtype if scores.is_floating_point() else pred.dtype
    # by comparison, not scatter_: no host sync, and a bad label never indexes memory
    onehot = labels.unsqueeze(1) == torch.arange(num_classes, device=labels.device)
    return torch.where(onehot, scores.to(dtype).unsqueeze(1), 0.0)


@register_model
class StableQualityFocalLoss(FrameworkLoss):
    """QFL with a ``stabilizer``; mmdet ``QualityFocalLoss`` contract.

    ``target`` is either mmdet's tuple ``(labels, scores)`` or a dense score tensor of
    ``pred``'s shape, (N, C) or (N, C, ...) (both give the same loss for (N, C)). The
    element-wise loss is summed over classes, then weighted
    per sample and reduced as mmdet does.
    """
    default_loss_name = 'loss_qfl'

    def __init__(self,
                 use_sigmoid: bool = True,
                 beta: float = 2.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False,
                 stabilizer: str = 'exact',
                 eps: float = 1e-3,
                 loss_name: Optional[str] = None) -> None:
        super().__init__(loss_name)
        if use_sigmoid is not True:
            raise DropInError('use_sigmoid must be True: only sigmoid QFL is supported')
        self.use_sigmoid = True
        self.beta = check_exponent(beta, 'beta')
        self.activated = check_flag(activated, 'activated')
        set_common_arguments(self, reduction, loss_weight, stabilizer, eps)

    def forward(self,
                pred: Tensor,
                target: Union[Tensor, Tuple[Tensor, Tensor]],
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        check_logits(pred, 'pred')
        reduction = resolve_reduction(self.reduction, reduction_override)
        if pred.ndim < 2 or (pred.ndim != 2 and not isinstance(target, Tensor)):
            raise DropInError(f'pred must be (N, num_classes) (or (N, num_classes, ...) with a '
                              f'dense score target), got {tuple(pred.shape)}')
        if not isinstance(target, Tensor):
            target = dense_quality_target(pred, target)
        loss = quality_focal_loss(pred, target, self.beta, 'none', activated=self.activated,
                                  stabilizer=self.stabilizer, eps=self.eps).sum(dim=1)
        return self.loss_weight * weighted_reduce(loss, weight, reduction, avg_factor)


@register_model
class StableVarifocalLoss(FrameworkLoss):
    """VFL with a ``stabilizer``; mmdet ``VarifocalLoss`` contract (target: (N, C) scores)."""
    default_loss_name = 'loss_vfl'

    def __init__(self,
                 use_sigmoid: bool = True,
                 alpha: float = 0.75,
                 gamma: float = 2.0,
                 iou_weighted: bool = True,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 stabilizer: str = 'exact',
                 eps: float = 1e-3,
                 loss_name: Optional[str] = None) -> None:
        super().__init__(loss_name)
        if use_sigmoid is not True:
            raise DropInError('use_sigmoid must be True: only sigmoid varifocal loss exists')
        self.use_sigmoid = True
        self.alpha = check_non_negative(alpha, 'alpha')  # mmdet: assert alpha >= 0
        self.gamma = check_exponent(gamma, 'gamma')
        self.iou_weighted = check_flag(iou_weighted, 'iou_weighted')
        set_common_arguments(self, reduction, loss_weight, stabilizer, eps)

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        check_logits(pred, 'pred')
        reduction = resolve_reduction(self.reduction, reduction_override)
        loss = varifocal_loss(pred, target, self.alpha, self.gamma, self.iou_weighted,
                              'none', stabilizer=self.stabilizer, eps=self.eps)
        return self.loss_weight * weighted_reduce(loss, weight, reduction, avg_factor)

