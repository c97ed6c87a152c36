"""Fused ``'exact'`` sigmoid focal loss, QFL and VFL: loss and closed-form gradient in one pass.

The autograd formulations (:func:`.sigmoid_focal.sigmoid_focal_loss`,
:func:`.generalized_focal.quality_focal_loss` / ``varifocal_loss``, kept as the references)
store several full-size intermediates for the backward pass and walk memory once per op.
Here the derivative is written out (:mod:`.fused_kernels`, built on the same
:mod:`.logspace` pieces as the references) and computed in the same pass as the loss (the
shared exp/log1p are the cost on CPU): autograd keeps one new tensor, the local gradient, and
backward multiplies it by the incoming gradient (into a new tensor: scaling the saved one in
place would break a second backward). (Recomputing from the logits in backward would save that
tensor but pay the transcendental math twice.) Without a gradient to compute (``no_grad``),
the loss-only kernel runs. How the kernels run (compiled now, in the background, eager, or not
at all) is :mod:`.compile_backend`'s business.

Inside a ``torch.compile``'d model the eager kernels are used, so the user's compiler traces
them like any other ops. Repeated and higher-order backward passes work as with the
reference (see :class:`_FusedLoss`).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .compile_backend import (
    BACKENDS,
    compiled_kernel,
    get_fused_backend,
    set_fused_backend,
    warm_up,
    worth_compiling,
)
from .fused_kernels import KERNELS, LOSS_ONLY

__all__ = ['BACKENDS', 'fused_kernel', 'fused_loss', 'set_fused_backend', 'get_fused_backend',
           'warm_up']


def _kernel_name(x: Tensor, targets: Tensor, loss: str) -> str:
    if loss == 'focal':
        loss = 'hard' if targets.dtype == torch.bool else 'soft'
    if not (x.requires_grad and torch.is_grad_enabled()):
        return loss + '_loss'  # no gradient wanted: the loss-only kernel
    return loss + '_loss_and_grad'


def _serving(x: Tensor, targets: Tensor, loss: str) -> Optional[tuple]:
    """``(kernel name, kernel)`` serving this call, or None for the autograd reference."""
    backend = get_fused_backend()
    if backend == 'off' or targets.requires_grad or x.dtype not in (torch.float32,
                                                                     torch.float64):
        return None
    name = _kernel_name(x, targets, loss)
    if backend == 'eager' or torch.compiler.is_compiling() or not worth_compiling(x):
        return name, KERNELS[name]  # (small CPU calls: compiling cannot pay off there)
    kernel = compiled_kernel(name, x.dtype, x.device.type, block=backend != 'auto')
    return None if kernel is None else (name, kernel)


def fused_kernel(x: Tensor, targets: Tensor, loss: str = 'focal') -> Optional[Callable]:
    """The kernel serving this call, or None for the autograd reference: backend 'off',
    targets that need a gradient, 16-bit logits (the caller upcasts them first), or, in 'auto'
    mode, a compiled kernel not built yet (its compilation then starts in the background).
    ``loss``: ``'focal'`` (sigmoid focal loss; bool targets select the hard-label kernel),
    ``'quality'`` (QFL) or ``'vfl'`` (VFL)."""
    serving = _serving(x, targets, loss)
    return None if serving is None else serving[1]


def fused_loss(loss: str, x: Tensor, targets: Tensor, params: tuple,
               reduction: str) -> Optional[Tensor]:
    """The loss through its fused kernel, reduced (``'none'``/``'sum'``/``'mean'``), or None
    when the autograd reference must serve (see :func:`fused_kernel`). ``x``: float32/float64
    logits; ``targets``: a bool mask of positives (focal, hard labels) or scores in ``x``'s
    dtype; ``params``: the kernel's scalars. Not checked here: the callers validate.

    The kernels are element-wise and the reduction is torch's own: a reduction compiled into
    the kernel is tuned to the size of the first call it sees, and on CUDA one compiled at
    1e4 elements ran 20x slower at 1e8 than one compiled there (results/gpu/); an element-wise
    kernel has no such memory of its first call."""
    serving = _serving(x, targets, loss)
    if serving is None:
        return None
    name, kernel = serving
    out = _FusedLoss.apply(x, targets, kernel, LOSS_ONLY[name], *params)
    if reduction == 'none':
        return out
    out = out.sum()
    return out / x.numel() if reduction == 'mean' and x.numel() > 0 else out


# ---- the autograd function ------------------------------------------------------------------

class _FusedLoss(torch.autograd.Function):
    """One pass computes the loss and its local gradient; backward is one multiplication.

    It behaves as the autograd reference does: a second backward through the same graph
    (``retain_graph=True``, ``gradcheck``) gets the same gradient again (the local gradient is
    not overwritten), and a ``create_graph`` backward differentiates the closed-form gradient
    with autograd (second derivatives, ``gradgradcheck``)."""

    @staticmethod
    def forward(ctx, x: Tensor, targets: Tensor, kernel: Callable, base: Callable,
                *params: float) -> Tensor:
        # element-wise kernels on 1-D views: one compiled graph serves every shape
        # (detached: a leaf's requires_grad flag would otherwise be a guard of its own)
        out = kernel(x.detach().reshape(-1), targets.reshape(-1), *params)
        if isinstance(out, tuple):
            loss, local_grad = out
            # x is saved for a create_graph backward only; it is the caller's tensor (no copy)
            ctx.save_for_backward(local_grad.view(x.shape), x, targets)
        else:  # no gradient wanted (no_grad, or logits that do not require it)
            loss = out
        ctx.base = base  # the loss-only function: its with_grad form is the closed form
        ctx.params = params
        return loss.view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        local_grad, x, targets = ctx.saved_tensors
        nones = (None, None, None) + (None,) * len(ctx.params)
        if not torch.is_grad_enabled():  # the usual first-order backward: one multiplication
            return (local_grad * grad,) + nones
        # create_graph: the closed-form gradient as a differentiable function of x
        _, d_x = ctx.base(x, targets, *ctx.params, with_grad=True)
        return (d_x * grad,) + nones
