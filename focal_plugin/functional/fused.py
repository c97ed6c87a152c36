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

Inside a ``torch.compile``'d model, and under ``torch.func`` transforms (``grad``, ``vmap``,
``jacrev``...), the eager kernels are used, so the user's compiler or transform traces them
like any other ops. Repeated and higher-order backward passes work as with the reference (see
:class:`_FusedLoss`). Targets that need a gradient get it in closed form as well (the
``*_and_grads`` kernels): that is the only exact path for them, so it serves them on every
backend, ``'off'`` included.
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


def needs_grad(tensor: Tensor) -> bool:
    """Whether autograd (or a ``torch.func`` transform) will want a gradient to ``tensor``."""
    return tensor.requires_grad and torch.is_grad_enabled()


def in_functorch_transform() -> bool:
    """Whether a ``torch.func`` transform (grad, vmap, jacrev, ...) is active. (torch has no
    public query; this is what ``torch.func`` itself consults.)"""
    return torch._C._functorch.peek_interpreter_stack() is not None


def _kernel_name(x: Tensor, targets: Tensor, loss: str) -> str:
    if loss == 'focal':
        loss = 'hard' if targets.dtype == torch.bool else 'soft'
    if needs_grad(targets):
        return loss + '_loss_and_grads'  # (never 'hard': bool targets have no gradient)
    if not needs_grad(x):
        return loss + '_loss'  # no gradient wanted: the loss-only kernel
    return loss + '_loss_and_grad'


def _serving(x: Tensor, targets: Tensor, loss: str) -> Optional[tuple]:
    """``(kernel name, kernel)`` serving this call, or None for the autograd reference."""
    backend = get_fused_backend()
    if x.dtype not in (torch.float32, torch.float64) or (backend == 'off'
                                                          and not needs_grad(targets)):
        return None
    name = _kernel_name(x, targets, loss)
    if backend in ('eager', 'off') or torch.compiler.is_compiling() or \
            in_functorch_transform() or not worth_compiling(x):
        return name, KERNELS[name]  # (small CPU calls: compiling cannot pay off there)
    kernel = compiled_kernel(name, x.dtype, x.device.type, block=backend != 'auto')
    return None if kernel is None else (name, kernel)


def fused_kernel(x: Tensor, targets: Tensor, loss: str = 'focal') -> Optional[Callable]:
    """The kernel serving this call, or None for the autograd reference: backend 'off' (unless
    the targets need a gradient), 16-bit logits (the caller upcasts them first), or, in 'auto'
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
    if name.endswith('_loss'):  # no gradient wanted: no autograd node either
        # (also sidesteps torch 2.13's dynamo, which calls a setup_context-style forward with
        # a ctx when no input requires grad)
        out = kernel(x.reshape(-1), targets.reshape(-1), *params).view(x.shape)
    else:
        out = _FusedLoss.apply(x, targets, kernel, LOSS_ONLY[name], *params)[0]
    if reduction == 'none':
        return out
    out = out.sum()
    return out / x.numel() if reduction == 'mean' and x.numel() > 0 else out


# ---- the autograd function ------------------------------------------------------------------

class _FusedLoss(torch.autograd.Function):
    """One pass computes the loss and its local gradients; backward is one multiplication.

    It behaves as the autograd reference does: a second backward through the same graph
    (``retain_graph=True``, ``gradcheck``) gets the same gradient again (the local gradients
    are not overwritten), and a ``create_graph`` backward differentiates the closed-form
    gradient with autograd (second derivatives, ``gradgradcheck``). ``forward`` /
    ``setup_context`` are separate and the local gradients are outputs of ``forward`` (marked
    non-differentiable), which is what ``torch.func`` needs: ``grad``/``jacrev`` call them
    at their own level, ``vmap`` batches them by running them on batched tensors
    (``generate_vmap_rule``: the kernels are plain element-wise torch ops)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, targets: Tensor, kernel: Callable, base: Callable, *params: float):
        # element-wise kernels on 1-D views: one compiled graph serves every shape
        # (detached: a leaf's requires_grad flag would otherwise be a guard of its own)
        out = kernel(x.detach().reshape(-1), targets.detach().reshape(-1), *params)
        return tuple(o.view(x.shape) for o in out) + (None,) * (3 - len(out))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, targets, _, base, *params = inputs
        _, local_x, local_t = output
        ctx.mark_non_differentiable(*(o for o in output[1:] if o is not None))
        # x and targets are saved for a create_graph backward only (the caller's tensors)
        ctx.save_for_backward(local_x, local_t, x, targets)
        ctx.base = base  # the loss-only function: its with_grad form is the closed form
        ctx.params = params

    @staticmethod
    def backward(ctx, grad: Tensor, *_):
        local_x, local_t, x, targets = ctx.saved_tensors
        nones = (None, None) + (None,) * len(ctx.params)
        want_x, want_t = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            # create_graph: the closed-form gradients as differentiable functions of x, t
            extra = {} if local_t is None else {'with_target_grad': True}
            _, local_x, *rest = ctx.base(x, targets, *ctx.params, with_grad=True, **extra)
            local_t = rest[0] if rest else None
        d_x = local_x * grad if want_x else None
        d_t = local_t * grad if want_t and local_t is not None else None
        return (d_x, d_t) + nones
