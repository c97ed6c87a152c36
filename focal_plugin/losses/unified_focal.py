"""Unified Focal Loss (Yeung et al. 2022) and its components as registered modules.

Callers (:mod:`._frameworks`): MMSegmentation's decode heads (``loss_decode``, with a per-pixel
``weight`` and the head's ``ignore_index`` at call time, logged under ``loss_name``) and
mmdet's mask heads (``loss_mask`` with ``use_mask=True``: the labelled class's channel as a
binary sigmoid map).
"""
from __future__ import annotations

import numbers
from typing import Optional

from torch import Tensor

from ..functional.unified_focal import UFL_VARIANTS, unified_family_loss
from ..functional.validation import (
    check_choice,
    check_eps,
    check_exponent,
    check_flag,
    check_ignore_index,
    check_logits,
    check_loss_weight,
    check_positive,
    check_probability,
    check_stabilizer,
)
from ..registry import register_model
from ._contract import resolve_reduction
from ._frameworks import FrameworkLoss, binary_mask_labels, call_ignore_index, mask_channel

__all__ = ['UnifiedFocalLoss', 'StableAsymmetricFocalLoss', 'StableFocalTverskyLoss']

_LAMBDA_HINT = ("UnifiedFocalLoss's lambda is the constructor argument tversky_weight "
                "(formerly weight); forward's weight is a per-pixel weight tensor")


class _SegmentationLoss(FrameworkLoss):
    """The shared constructor and forward of the unified family: ``part`` picks the
    component(s) of :func:`focal_plugin.functional.unified_focal.unified_family_loss`."""
    part = 'unified'

    def __init__(self, delta: float = 0.6, gamma: float = 0.5, variant: str = 'asymmetric',
                 ignore_index: int = 255, loss_weight: float = 1.0,
                 stabilizer: str = 'exact', eps: float = 1e-3, avg_non_ignore: bool = True,
                 use_mask: bool = False, loss_name: Optional[str] = None,
                 tversky_weight: float = 0.5, smooth: float = 1e-7) -> None:
        super().__init__(loss_name, use_mask)
        if check_exponent(gamma, 'gamma') > 1.0 and self.part != 'focal':
            raise ValueError(f'gamma must be in [0, 1] for a loss with a Tversky term (its '
                             f'exponent is 1 - gamma), got {gamma}')
        self.loss_weight = check_loss_weight(loss_weight)
        self.ignore_index = check_ignore_index(ignore_index)
        self.options = dict(
            lam=check_probability(tversky_weight, 'tversky_weight (lambda)'),
            delta=check_probability(delta, 'delta'), gamma=float(gamma),
            variant=check_choice(variant, 'variant', UFL_VARIANTS),
            avg_non_ignore=check_flag(avg_non_ignore, 'avg_non_ignore'),
            smooth=check_positive(smooth, 'smooth'), stabilizer=check_stabilizer(stabilizer),
            eps=check_eps(eps))

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None, reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        """``pred``: logits (N, C, H, W) (C = 1: sigmoid, binary); ``target``: labels
        (N, H, W) or (N, 1, H, W), 0 = background, ``ignore_index`` skipped; ``weight``:
        optional per-pixel weights (N, H, W) (mmseg's ``seg_weight``), or, with
        ``use_mask=True``, a mask head's class labels (n,). ``ignore_index`` at call time
        (mmseg's decode head passes its own) wins over the constructor's.
        ``reduction_override='none'`` gives per-pixel losses, for the focal component only."""
        check_logits(pred, 'pred')
        if avg_factor is not None:
            raise TypeError(f'{type(self).__name__} does not take avg_factor: it is '
                            f'normalised per pixel and per image and class, not by a count')
        if weight is not None and not isinstance(weight, Tensor):
            hint = f' ({_LAMBDA_HINT})' if isinstance(weight, numbers.Real) else ''
            raise TypeError(f'weight must be a per-pixel weight tensor or None, got '
                            f'{weight!r}{hint}')
        if weight is not None and weight.ndim == 1 and pred.ndim > 2 and not self.use_mask:
            raise ValueError(f'weight must be one weight per pixel, got shape '
                             f'{tuple(weight.shape)}: a mask head passes its class labels '
                             f'here; for loss_mask set use_mask=True')
        reduction = resolve_reduction('mean', reduction_override)
        if reduction != 'mean' and self.part != 'focal':
            raise ValueError(
                f"reduction_override must be None or 'mean' for {type(self).__name__}: its "
                f"Tversky (region) term has no per-pixel value, got {reduction!r}. mmseg's "
                f"OHEMPixelSampler asks for one when it has no thresh: give it thresh=..., or "
                f"rank pixels by StableAsymmetricFocalLoss")
        if self.use_mask:  # the labelled class's channel, as one binary sigmoid map
            pred, target, weight = (mask_channel(pred, weight).unsqueeze(1),
                                    binary_mask_labels(target), None)
        loss = unified_family_loss(
            self.part, pred, target, reduction=reduction, pixel_weight=weight,
            ignore_index=call_ignore_index(self.ignore_index, ignore_index),
            names=('pred', 'target', 'weight'), **self.options)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        shown = {k: v for k, v in self.options.items()
                 if not (self.part == 'focal' and k in ('lam', 'smooth'))
                 and not (self.part == 'tversky' and k in ('lam', 'avg_non_ignore'))}
        if 'lam' in shown:
            shown['tversky_weight'] = shown.pop('lam')
        return ', '.join([f'loss_name={self.loss_name!r}', f'ignore_index={self.ignore_index}']
                         + [f'{k}={v!r}' for k, v in shown.items()])


@register_model
class UnifiedFocalLoss(_SegmentationLoss):
    """``tversky_weight * focal_Tversky + (1 - tversky_weight) * focal`` for imbalanced
    segmentation (Yeung et al. 2022; the math: :mod:`focal_plugin.functional.unified_focal`).

    In MMSegmentation: ``loss_decode=dict(type='UnifiedFocalLoss', loss_weight=1.0)``; in a
    Mask R-CNN: ``loss_mask=dict(type='UnifiedFocalLoss', use_mask=True)``.

    Args:
        variant: 'asymmetric' (default) | 'symmetric'.
        weight: the paper's lambda, kept for existing configs; prefer ``tversky_weight``
            (``forward``'s ``weight`` is mmseg's per-pixel weight tensor).
        delta: 0.6, gamma: 0.5 (the paper's defaults; gamma in [0, 1]).
        ignore_index: label ignored by both terms (mmseg's call-time value wins).
        smooth: Tversky smoothing (1e-7, the authors' value; it decides the loss of images
            without foreground).
        loss_weight: scale of the loss. stabilizer, eps: see
            :mod:`focal_plugin.functional.stabilizer`.
        tversky_weight: lambda in [0, 1] (0.5). avg_non_ignore: the focal term's mean over
            the non-ignored pixels (True, the paper's) or over all (mmseg's legacy mean).
        use_mask: called by an mmdet mask head (class labels as the third argument).
        loss_name: mmseg's log key ('loss_unified_focal').

    Example::

        >>> loss = UnifiedFocalLoss()
        >>> logits, labels = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
        >>> loss(logits, labels, ignore_index=255).shape
        torch.Size([])
    """
    default_loss_name = 'loss_unified_focal'

    def __init__(self, variant: str = 'asymmetric', weight: Optional[float] = None,
                 delta: float = 0.6, gamma: float = 0.5, ignore_index: int = 255,
                 smooth: float = 1e-7, loss_weight: float = 1.0, stabilizer: str = 'exact',
                 eps: float = 1e-3, tversky_weight: Optional[float] = None,
                 avg_non_ignore: bool = True, use_mask: bool = False,
                 loss_name: Optional[str] = None) -> None:
        if weight is not None and tversky_weight is not None:
            raise TypeError('give lambda once: weight and tversky_weight are the same '
                            'argument of UnifiedFocalLoss (weight is its former name)')
        if isinstance(weight, Tensor):
            raise TypeError(f'weight of UnifiedFocalLoss() must be a number in [0, 1]: '
                            f'{_LAMBDA_HINT}')
        lam = weight if weight is not None else tversky_weight
        super().__init__(delta, gamma, variant, ignore_index, loss_weight, stabilizer, eps,
                         avg_non_ignore, use_mask, loss_name,
                         tversky_weight=0.5 if lam is None else lam, smooth=smooth)


@register_model
class StableAsymmetricFocalLoss(_SegmentationLoss):
    """The focal (cross-entropy) component of the unified focal loss on its own (any
    gamma >= 0, as the authors' ``asymmetric_focal_loss``, whose default is 2). Per-pixel
    losses with ``reduction_override='none'`` (what mmseg's OHEM sampler ranks)."""
    part = 'focal'
    default_loss_name = 'loss_asymmetric_focal'

    def __init__(self, delta: float = 0.6, gamma: float = 0.5, variant: str = 'asymmetric',
                 ignore_index: int = 255, loss_weight: float = 1.0,
                 stabilizer: str = 'exact', eps: float = 1e-3, avg_non_ignore: bool = True,
                 use_mask: bool = False, loss_name: Optional[str] = None) -> None:
        super().__init__(delta, gamma, variant, ignore_index, loss_weight, stabilizer, eps,
                         avg_non_ignore, use_mask, loss_name)


@register_model
class StableFocalTverskyLoss(_SegmentationLoss):
    """The focal Tversky (region) component of the unified focal loss on its own (``smooth``
    first, as before the mmseg arguments were added)."""
    part = 'tversky'
    default_loss_name = 'loss_focal_tversky'

    def __init__(self, smooth: float = 1e-7, delta: float = 0.6, gamma: float = 0.5,
                 variant: str = 'asymmetric', ignore_index: int = 255,
                 loss_weight: float = 1.0, stabilizer: str = 'exact', eps: float = 1e-3,
                 use_mask: bool = False, loss_name: Optional[str] = None) -> None:
        super().__init__(delta, gamma, variant, ignore_index, loss_weight, stabilizer, eps,
                         use_mask=use_mask, loss_name=loss_name, smooth=smooth)
