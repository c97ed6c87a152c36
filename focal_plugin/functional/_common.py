"""Small shared pieces of the functional losses: input checks, dtype policy, reduction.

(The shared *math* is in :mod:`.logspace`.)"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .stabilizer import check_reduction

__all__ = ['check_logits', 'check_same_shape', 'check_alpha', 'compute_dtype', 'reduce']


def check_logits(inputs: Tensor, name: str = 'inputs') -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(inputs).__name__}')
    if not inputs.is_floating_point():
        raise TypeError(f'{name} must be a floating point tensor of logits, got {inputs.dtype}')


def check_same_shape(inputs: Tensor, targets: Tensor, name: str = 'targets') -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(targets).__name__}')
    if targets.shape != inputs.shape:
        raise ValueError(f'{name} must have the shape of inputs {tuple(inputs.shape)}, '
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


def compute_dtype(inputs: Tensor) -> torch.dtype:
    """Half-precision logits are computed in float32 (as autocast does for BCE-with-logits):
    the loss is a sum of many small terms and float16 cannot hold ``log(1 - p)`` for confident
    predictions. The loss comes back in float32; gradients flow back in the input dtype."""
    return torch.float32 if inputs.dtype in (torch.float16, torch.bfloat16) else inputs.dtype


def reduce(loss: Tensor, reduction: str) -> Tensor:
    """torchvision-style reduction; the mean of an empty tensor is 0 (not NaN), so a batch
    with zero anchors/pixels contributes a zero loss and zero gradients."""
    if reduction == 'none':
        return loss
    if reduction == 'sum' or loss.numel() == 0:
        return loss.sum()
    if reduction == 'mean':
        return loss.mean()
    check_reduction(reduction)
    raise AssertionError('unreachable')
