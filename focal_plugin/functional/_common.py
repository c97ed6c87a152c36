"""Small shared pieces of the functional losses: dtype policy, reduction.

(The shared *math* is in :mod:`.logspace`.)"""
from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_reduction

__all__ = ['compute_dtype', 'reduce']


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
