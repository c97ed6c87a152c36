"""How each OpenMMLab framework calls a loss module, mapped onto the module's one math core.

=====================  ======================================================================
caller                 call
=====================  ======================================================================
mmdet dense heads      ``loss(pred (N, C), target (N,) | (N, C), weight, avg_factor,
                       reduction_override)``
mmdet mask heads       ``loss(mask_pred (n, C, h, w), mask_target (n, h, w), labels (n,))``:
                       the third positional argument is the RoIs' class labels (``FCNMaskHead``
                       and its subclasses); with ``use_mask=True`` the labelled class's
                       channel is taken, as mmdet's ``CrossEntropyLoss(use_mask=True)`` does
mmseg decode heads     ``loss(seg_logits (N, C, H, W), seg_label (N, H, W), weight=seg_weight,
                       ignore_index=...)``, and ``reduction_override='none'`` from the OHEM
                       sampler; the result is logged and summed under ``module.loss_name``
mmpretrain heads       ``loss(cls_score (N, C), target (N,) | (N, C) probabilities,
                       avg_factor=N)`` (probabilities under Mixup / CutMix / label smoothing)
=====================  ======================================================================

:class:`FrameworkLoss` holds what every registered loss shares (``loss_name``, ``use_mask``);
the functions below turn a caller's arguments into the functional form's.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..functional.targets import check_label_range
from ..functional.validation import check_flag, check_ignore_index, check_index_labels

__all__ = ['FrameworkLoss', 'check_loss_name', 'mask_channel', 'binary_mask_labels',
           'call_ignore_index', 'MASK_LABELS']

# what the third positional argument is when use_mask=True (for error messages)
MASK_LABELS = "weight (a mask head's class labels, use_mask=True)"


def check_loss_name(loss_name) -> str:
    """mmseg logs each loss under its ``loss_name`` and adds to the total only the keys that
    contain ``'loss'``: a name without it would be logged and never trained."""
    if not isinstance(loss_name, str):
        raise TypeError(f'loss_name must be a str, got {loss_name!r} '
                        f'({type(loss_name).__name__})')
    if not loss_name.startswith('loss_'):
        raise ValueError(f"loss_name must start with 'loss_' (mmseg adds to the total loss only "
                         f"the terms whose name contains 'loss'), got {loss_name!r}")
    return loss_name


class FrameworkLoss(nn.Module):
    """Base of the registered losses: ``loss_name`` (read by mmseg's decode heads) and
    ``use_mask`` (mmdet's mask heads pass class labels as the third argument)."""
    default_loss_name = 'loss_focal'

    def __init__(self, loss_name: Optional[str] = None, use_mask: bool = False) -> None:
        super().__init__()
        self._loss_name = check_loss_name(
            self.default_loss_name if loss_name is None else loss_name)
        self.use_mask = check_flag(use_mask, 'use_mask')

    @property
    def loss_name(self) -> str:
        """The key under which mmseg logs this loss (it must start with ``loss_``)."""
        return self._loss_name


def mask_channel(pred: Tensor, labels) -> Tensor:
    """mmdet's mask heads: logits (n, C, h, w) and the RoIs' labels (n,) -> the labelled
    class's logits (n, h, w) (C = 1 for class-agnostic heads, whose labels are zeros)."""
    if pred.ndim < 3:
        raise ValueError(f'use_mask=True needs mask logits (n, C, h, w), got pred of shape '
                         f'{tuple(pred.shape)}')
    if labels is None:
        raise TypeError(f'use_mask=True needs the class labels as the third argument, '
                        f'{MASK_LABELS}; got None')
    check_index_labels(labels, MASK_LABELS)
    if labels.shape != pred.shape[:1]:
        raise ValueError(f'{MASK_LABELS} must have shape ({pred.shape[0]},), one label per '
                         f'mask, got {tuple(labels.shape)}')
    num_classes = pred.shape[1]
    check_label_range(labels, 0, num_classes - 1, MASK_LABELS)
    # gather, not pred[arange, labels]: no host sync; the clamp keeps a bad label (reported
    # by the deferred range check on CUDA) from indexing outside the tensor
    index = labels.long().clamp(0, num_classes - 1)
    index = index.view((-1, 1) + (1,) * (pred.ndim - 2)).expand(
        (-1, 1) + tuple(pred.shape[2:]))
    return pred.gather(1, index).squeeze(1)


def binary_mask_labels(target: Tensor, name: str = 'target') -> Tensor:
    """A mask head's targets (n, h, w), float 0/1 by default in mmdet, as integer labels for
    the losses that take class indices. Soft targets (mmdet's ``soft_mask_target``) have no
    class index: refused, naming the loss that takes them."""
    if not isinstance(target, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(target).__name__}')
    if target.dtype == torch.bool:
        return target.long()
    check_label_range(target, 0, 1, f'{name} (binary masks; soft mask targets need '
                      f'StableFocalLoss(use_mask=True))')
    return target.long()


def call_ignore_index(default: int, at_call) -> int:
    """mmseg passes its decode head's ``ignore_index`` at every call; it wins over the
    module's own (None: the module's)."""
    return default if at_call is None else check_ignore_index(at_call)
