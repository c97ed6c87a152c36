"""Stable sigmoid and softmax focal losses as registered MMDetection modules."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..functional import sigmoid_focal_loss, softmax_focal_loss
from ..functional.targets import check_label_range
from ..functional.validation import (
    DropInError,
    check_alpha,
    check_class_vector,
    check_exponent,
    check_flag,
    check_ignore_index,
    check_index_labels,
    check_logits,
    check_probability,
    not_ignored,
)
from ..registry import register_model
from ._contract import resolve_reduction, set_common_arguments, weighted_reduce

__all__ = ['StableFocalLoss', 'StableSoftmaxFocalLoss']


def index_to_onehot(pred: Tensor, target: Tensor) -> Tensor:
    """mmdet's label convention: ``target`` (N,) in ``[0, C]``, where ``C`` (num_classes) is
    the background, becomes a bool one-hot (N, C) with an all-False background row (bool:
    the loss knows without another pass that these are hard labels)."""
    if pred.ndim != 2:
        raise ValueError(f'with index targets, pred must be (N, num_classes), got shape '
                         f'{tuple(pred.shape)}')
    if not target.is_floating_point():
        check_index_labels(target, 'target')  # a bool "is positive" mask is not classes
    if target.is_floating_point() or target.ndim != 1 or target.shape[0] != pred.shape[0]:
        raise ValueError(f'target must be class indices of shape ({pred.shape[0]},) or have '
                         f'the shape of pred {tuple(pred.shape)}; got {target.dtype} '
                         f'{tuple(target.shape)}')
    num_classes = pred.shape[1]
    check_label_range(target, 0, num_classes, 'target labels',
                      f' ({num_classes} = background)')
    # by comparison, not F.one_hot: no host sync, and a bad label never indexes memory
    return target.unsqueeze(1) == torch.arange(num_classes, device=target.device)


@register_model
class StableFocalLoss(nn.Module):
    """Sigmoid focal loss, drop-in for mmdet's ``FocalLoss`` with a ``stabilizer``.

    ``loss_cls=dict(type='StableFocalLoss', use_sigmoid=True, gamma=0.5, alpha=0.25,
    loss_weight=1.0)`` in any mmdet config. Same constructor and forward contract as
    ``mmdet.models.losses.FocalLoss``; the math and the three stabilizer modes are in
    :func:`focal_plugin.functional.sigmoid_focal_loss`.

    Args:
        use_sigmoid: must be True (use :class:`StableSoftmaxFocalLoss` for softmax).
        gamma: focusing parameter >= 0. alpha: positive-class weight in [0, 1] (or -1/None).
        reduction: 'none' | 'mean' | 'sum'. loss_weight: scale of the loss.
        activated: predictions are probabilities instead of logits.
        stabilizer: 'exact' (default) | 'epsilon' | 'none'. eps: 'epsilon' offset.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: Optional[float] = 0.25,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False,
                 stabilizer: str = 'exact',
                 eps: float = 1e-3) -> None:
        super().__init__()
        if use_sigmoid is not True:
            raise DropInError('use_sigmoid must be True for StableFocalLoss; use '
                             'StableSoftmaxFocalLoss for the softmax focal loss')
        self.use_sigmoid = True
        self.gamma = check_exponent(gamma, 'gamma')
        self.alpha = check_alpha(alpha)
        self.activated = check_flag(activated, 'activated')
        set_common_arguments(self, reduction, loss_weight, stabilizer, eps)

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """``target``: labels (N,) in [0, C] (C = background) for ``pred`` (N, C), or a
        one-hot / soft target of ``pred``'s shape."""
        check_logits(pred, 'pred')
        reduction = resolve_reduction(self.reduction, reduction_override)
        if not isinstance(target, Tensor):
            raise TypeError(f'target must be a torch.Tensor, got {type(target).__name__}')
        if pred.dim() != target.dim():
            target = index_to_onehot(pred, target)
        loss = sigmoid_focal_loss(pred, target, self.alpha, self.gamma, 'none',
                                  stabilizer=self.stabilizer, eps=self.eps,
                                  activated=self.activated)
        return self.loss_weight * weighted_reduce(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return (f'gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}, stabilizer={self.stabilizer!r}')


@register_model
class StableSoftmaxFocalLoss(nn.Module):
    """Multi-class (softmax) focal loss; see :func:`focal_plugin.functional.softmax_focal_loss`.

    ``target`` holds class indices (``F.cross_entropy`` layout, ``ignore_index`` skipped).
    With ``reduction='mean'`` and no ``avg_factor`` the loss is averaged over the
    non-ignored elements.

    Args:
        gamma: focusing parameter >= 0. alpha: None, a scalar or one value per class.
        class_weight: optional per-class weights. ignore_index: label to skip.
        label_smoothing: in [0, 1). reduction, loss_weight: as mmdet.
        stabilizer: 'exact' (default) | 'epsilon' | 'none'. eps: 'epsilon' offset.
    """

    def __init__(self,
                 gamma: float = 2.0,
                 alpha: Union[float, Sequence[float], None] = None,
                 class_weight: Optional[Sequence[float]] = None,
                 ignore_index: int = -100,
                 label_smoothing: float = 0.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 stabilizer: str = 'exact',
                 eps: float = 1e-3) -> None:
        super().__init__()
        self.gamma = check_exponent(gamma, 'gamma')
        for name, value in (('alpha', alpha), ('class_weight', class_weight)):
            if value is not None:  # values checked now; the length once C is known
                entries = len(value) if hasattr(value, '__len__') else 1
                check_class_vector(value, entries, name, like=torch.empty(0))
        self.alpha = alpha
        self.class_weight = class_weight
        self.ignore_index = check_ignore_index(ignore_index)
        self.label_smoothing = check_probability(label_smoothing, 'label_smoothing',
                                                 open_above=True)
        set_common_arguments(self, reduction, loss_weight, stabilizer, eps)

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        check_logits(pred, 'pred')
        reduction = resolve_reduction(self.reduction, reduction_override)
        loss = softmax_focal_loss(pred, target, self.alpha, self.gamma, 'none',
                                  class_weight=self.class_weight,
                                  ignore_index=self.ignore_index,
                                  label_smoothing=self.label_smoothing,
                                  stabilizer=self.stabilizer, eps=self.eps)
        if reduction == 'mean' and avg_factor is None:  # over the non-ignored elements
            avg_factor = not_ignored(target, self.ignore_index).sum().clamp(min=1)
        return self.loss_weight * weighted_reduce(loss, weight, reduction, avg_factor)
