"""Fused ``'exact'`` sigmoid focal loss, QFL and VFL: loss and closed-form gradient in one pass.

The autograd formulations (:func:`.sigmoid_focal.sigmoid_focal_loss`,
:func:`.generalized_focal.quality_focal_loss` / ``varifocal_loss``, kept as the references)
store several full-size intermediates for the backward pass and walk memory once per op.
Here the derivative is written out (:mod:`.fused_kernels`, built on the same
:mod:`.logspace` pieces as the references) and computed in the same pass as the loss (the
shared exp/log1p are the cost on CPU): autograd keeps one tensor, the local gradient, and
backward scales it in place by the incoming gradient. (Recomputing from the logits in backward
would save that tensor but pay the transcendental math twice.) Without a gradient to compute
(``no_grad``), the loss-only kernel runs. How the kernels run (compiled in the background,
compiled now, eager, or not at all) is :mod:`.compile_backend`'s business.

Inside a ``torch.compile``'d model the eager kernels are used, so the user's compiler traces
them like any other ops. The fused function is first-order and single-use: a ``create_graph``
backward or a second backward through the same graph (``retain_graph=True``) raises; set the
backend to ``'off'`` for those.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .compile_backend import (
    BACKENDS,
    compiled_kernel,
    get_fused_backend,
    set_fused_backend,
    warm_up,
)
from .fused_kernels import KERNELS

__all__ = ['BACKENDS', 'fused_kernel', 'fused_loss', 'set_fused_backend', 'get_fused_backend',
           'warm_up']


def _kernel_name(x: Tensor, targets: Tensor, loss: str, summed: bool) -> str:
    if loss == 'focal':
        loss = 'hard' if targets.dtype == torch.bool else 'soft'
    if not (x.requires_grad and torch.is_grad_enabled()):
        return loss + '_loss'  # no gradient wanted: the loss-only kernel (summed outside)
    return loss + ('_loss_sum_and_grad' if summed else '_loss_and_grad')


def fused_kernel(x: Tensor, targets: Tensor, loss: str = 'focal',
                 summed: bool = False) -> Optional[Callable]:
    """The kernel serving this call, or None for the autograd reference: backend 'off',
    targets that need a gradient, 16-bit logits (the caller upcasts them first), or, in 'auto'
    mode, a compiled kernel not built yet (its compilation then starts in the background).
    ``loss``: ``'focal'`` (sigmoid focal loss; bool targets select the hard-label kernel),
    ``'quality'`` (QFL) or ``'vfl'`` (VFL); ``summed``: the loss is summed in the kernel."""
    backend = get_fused_backend()
    if backend == 'off' or targets.requires_grad or x.dtype not in (torch.float32,
                                                                     torch.float64):
        return None
    name = _kernel_name(x, targets, loss, summed)
    if backend == 'eager' or torch.compiler.is_compiling():
        return KERNELS[name]
    return compiled_kernel(name, x.dtype, x.device.type, block=backend == 'compile')


def fused_loss(loss: str, x: Tensor, targets: Tensor, params: tuple,
               reduction: str) -> Optional[Tensor]:
    """The loss through its fused kernel, reduced (``'none'``/``'sum'``/``'mean'``), or None
    when the autograd reference must serve (see :func:`fused_kernel`). ``x``: float32/float64
    logits; ``targets``: a bool mask of positives (focal, hard labels) or scores in ``x``'s
    dtype; ``params``: the kernel's scalars. Not checked here: the callers validate."""
    summed = reduction != 'none' and x.numel() > 0
    kernel = fused_kernel(x, targets, loss, summed)
    if kernel is None:
        return None
    out = _FusedLoss.apply(x, targets, kernel, *params)
    if reduction == 'none':
        return out
    if out.dim() > 0:  # loss-only kernel, or an empty input
        out = out.sum()
    return out / x.numel() if reduction == 'mean' and x.numel() > 0 else out


# ---- the autograd function ------------------------------------------------------------------

class _FusedLoss(torch.autograd.Function):
    """One pass computes the loss and its local gradient; backward is one multiplication."""

    @staticmethod
    def forward(ctx, x: Tensor, targets: Tensor, kernel: Callable, *params: float) -> Tensor:
        # element-wise kernels on 1-D views: one compiled graph serves every shape
        # (detached: a leaf's requires_grad flag would otherwise be a guard of its own)
        out = kernel(x.detach().reshape(-1), targets.reshape(-1), *params)
        if isinstance(out, tuple):
            loss, local_grad = out
            ctx.save_for_backward(local_grad.view(x.shape))
        else:  # no gradient wanted (no_grad, or logits that do not require it)
            loss = out
        ctx.num_params = len(params)
        ctx.consumed = False
        return loss if loss.dim() == 0 else loss.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        if ctx.consumed:
            raise RuntimeError('the fused focal loss supports one backward pass per forward '
                               '(its local gradient is scaled in place); for retain_graph=True '
                               'set FOCAL_PLUGIN_FUSED=off')
        ctx.consumed = True
        (local_grad,) = ctx.saved_tensors
        # needed once: scale it in place rather than allocate (and page in) another tensor
        return (local_grad.mul_(grad), None, None) + (None,) * ctx.num_params
