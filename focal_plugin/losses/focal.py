"""Stable sigmoid and softmax focal losses as registered modules (mmdet, mmseg, mmpretrain)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..functional import sigmoid_focal_loss
from ..functional.softmax_focal import softmax_focal_terms
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
from ._frameworks import FrameworkLoss, call_ignore_index, mask_channel

__all__ = ['StableFocalLoss', 'StableSoftmaxFocalLoss']


def index_to_onehot(pred: Tensor, target: Tensor,
                    ignore_index: Optional[int] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Class indices -> a bool one-hot of ``pred``'s shape, and the mask of the elements that
    count (None when nothing is ignored). Bool: the loss knows without another pass that
    these are hard labels.

    mmdet's convention: ``target`` (N,) in ``[0, C]`` for ``pred`` (N, C), where ``C``
    (num_classes) is the background, an all-False row. Dense label maps (N, H, W) for
    ``pred`` (N, C, H, W) follow MMSegmentation's ``FocalLoss``: the same for C >= 2, and
    for one channel (a binary decode head) label 1 is the foreground, 0 the background.
    Labels equal to ``ignore_index`` count for nothing."""
    expected = pred.shape[:1] + pred.shape[2:]
    if not target.is_floating_point():
        check_index_labels(target, 'target')  # a bool "is positive" mask is not classes
    if target.is_floating_point() or target.shape != expected:
        layout = f'({pred.shape[0]},)' if pred.ndim == 2 else f'{tuple(expected)} (a label map)'
        hint = ("; a mask head's call (mask targets, labels)? set use_mask=True"
                if pred.ndim > 2 and target.is_floating_point() else '')
        raise ValueError(f'target must be class indices of shape {layout} or have the shape '
                         f'of pred {tuple(pred.shape)}; got {target.dtype} '
                         f'{tuple(target.shape)}{hint}')
    num_classes = pred.shape[1]
    valid = None if ignore_index is None else not_ignored(target, ignore_index)
    if valid is not None:
        target = torch.where(valid, target, 0)
    binary_map = pred.ndim > 2 and num_classes == 1
    high = 1 if binary_map else num_classes
    check_label_range(target, 0, high, 'target labels',
                      ' (1 = foreground of a one-channel map)' if binary_map else
                      f' ({num_classes} = background)' + (
                          f'; or ignore_index={ignore_index}' if valid is not None else ''))
    # by comparison, not F.one_hot: no host sync, and a bad label never indexes memory
    classes = torch.arange(num_classes, device=target.device) + int(binary_map)
    onehot = target.unsqueeze(1) == classes.view((1, -1) + (1,) * (target.ndim - 1))
    return onehot, valid


@register_model
class StableFocalLoss(FrameworkLoss):
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
        ignore_index: labels to skip (None: none; mmseg passes its head's at every call).
        use_mask: called by an mmdet mask head (``loss_mask=dict(type='StableFocalLoss',
            use_mask=True)``): the third argument is the RoIs' class labels.
        loss_name: mmseg's log key ('loss_focal').
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: Optional[float] = 0.25,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False,
                 stabilizer: str = 'exact',
                 eps: float = 1e-3,
                 ignore_index: Optional[int] = None,
                 use_mask: bool = False,
                 loss_name: Optional[str] = None) -> None:
        super().__init__(loss_name, use_mask)
        if use_sigmoid is not True:
            raise DropInError('use_sigmoid must be True for StableFocalLoss; use '
                             'StableSoftmaxFocalLoss for the softmax focal loss')
        self.use_sigmoid = True
        self.gamma = check_exponent(gamma, 'gamma')
        self.alpha = check_alpha(alpha)
        self.activated = check_flag(activated, 'activated')
        self.ignore_index = None if ignore_index is None else check_ignore_index(ignore_index)
        set_common_arguments(self, reduction, loss_weight, stabilizer, eps)

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        """``target``: labels (N,) in [0, C] (C = background) for ``pred`` (N, C), a label
        map (N, H, W) for ``pred`` (N, C, H, W) (:func:`index_to_onehot`), or a one-hot /
        soft target of ``pred``'s shape. ``weight``: per element, per sample (N,), per pixel
        (N, H, W); with ``use_mask=True`` a mask head's class labels (n,): the labelled
        class's channel of ``pred`` (n, C, h, w) is scored against ``target`` (n, h, w).
        ``ignore_index`` (mmseg passes its head's) drops those labels from the loss and the
        mean."""
        check_logits(pred, 'pred')
        reduction = resolve_reduction(self.reduction, reduction_override)
        if not isinstance(target, Tensor):
            raise TypeError(f'target must be a torch.Tensor, got {type(target).__name__}')
        if self.use_mask:
            pred, weight = mask_channel(pred, weight), None
        valid = None
        if pred.dim() != target.dim():
            target, valid = index_to_onehot(
                pred, target, call_ignore_index(self.ignore_index, ignore_index))
        loss = sigmoid_focal_loss(pred, target, self.alpha, self.gamma, 'none',
                                  stabilizer=self.stabilizer, eps=self.eps,
                                  activated=self.activated)
        if isinstance(weight, Tensor) and pred.ndim > 2 and weight.shape == target.shape[:1] + \
                target.shape[2:]:  # one weight per pixel of a label map (mmseg's seg_weight)
            weight = weight.unsqueeze(1).expand_as(loss)
        if valid is not None:
            loss = loss * valid.unsqueeze(1)
            if reduction == 'mean' and avg_factor is None:  # over the elements that count
                avg_factor = valid.sum() * loss.shape[1]
        return self.loss_weight * weighted_reduce(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return (f'gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}, stabilizer={self.stabilizer!r}')


@register_model
class StableSoftmaxFocalLoss(FrameworkLoss):
    """Multi-class (softmax) focal loss; see :func:`focal_plugin.functional.softmax_focal_loss`.

    ``target`` holds class indices (``F.cross_entropy`` layout, ``ignore_index`` skipped) or
    class probabilities of ``pred``'s shape (Mixup / CutMix in MMPretrain). With
    ``reduction='mean'`` and no ``avg_factor`` the loss is averaged over the non-ignored
    elements (over all of them with ``avg_non_ignore=False``, mmseg's legacy mean).

    In MMSegmentation: ``loss_decode=dict(type='StableSoftmaxFocalLoss', gamma=0.5)`` (the
    head's ``ignore_index`` is passed at every call and wins over the constructor's); in
    MMPretrain: ``loss=dict(type='StableSoftmaxFocalLoss', gamma=0.5)``.

    Args:
        gamma: focusing parameter >= 0. alpha: None, a scalar or one value per class.
        class_weight: optional per-class weights. ignore_index: label to skip.
        label_smoothing: in [0, 1). reduction, loss_weight: as mmdet.
        stabilizer: 'exact' (default) | 'epsilon' | 'none'. eps: 'epsilon' offset.
        avg_non_ignore: see above. loss_name: mmseg's log key ('loss_softmax_focal').
    """
    default_loss_name = 'loss_softmax_focal'

    def __init__(self,
                 gamma: float = 2.0,
                 alpha: Union[float, Sequence[float], None] = None,
                 class_weight: Optional[Sequence[float]] = None,
                 ignore_index: int = -100,
                 label_smoothing: float = 0.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 stabilizer: str = 'exact',
                 eps: float = 1e-3,
                 avg_non_ignore: bool = True,
                 loss_name: Optional[str] = None) -> None:
        super().__init__(loss_name)
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
        self.avg_non_ignore = check_flag(avg_non_ignore, 'avg_non_ignore')
        set_common_arguments(self, reduction, loss_weight, stabilizer, eps)

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        check_logits(pred, 'pred')
        reduction = resolve_reduction(self.reduction, reduction_override)
        loss, valid = softmax_focal_terms(
            pred, target, self.alpha, self.gamma, class_weight=self.class_weight,
            ignore_index=call_ignore_index(self.ignore_index, ignore_index),
            label_smoothing=self.label_smoothing, stabilizer=self.stabilizer, eps=self.eps,
            names=('pred', 'target'))
        if reduction == 'mean' and avg_factor is None:
            avg_factor = valid.sum().clamp(min=1) if self.avg_non_ignore else \
                max(valid.numel(), 1)
        return self.loss_weight * weighted_reduce(loss, weight, reduction, avg_factor)
