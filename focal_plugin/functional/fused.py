"""Fused ``'exact'`` sigmoid focal loss, QFL and VFL: loss and closed-form gradient in one pass.

The autograd formulations (:func:`.sigmoid_focal.sigmoid_focal_loss`,
:func:`.generalized_focal.quality_focal_loss` / ``varifocal_loss``, kept as the references)
stores several full-size intermediates for the backward pass and walks memory once per op.
Here the derivative is written out, with the singular factor already cancelled, and computed
in the same pass as the loss (the shared exp/log1p are the cost on CPU): autograd keeps one
tensor, the local gradient, and backward scales it in place by the incoming gradient.
(Recomputing from the logits in backward would save that tensor but pay the transcendental
math twice.) Without a gradient to compute (``no_grad``), the loss-only kernel runs.

Hard targets, signed logit ``u = (2t - 1) x``, ``m = 1 - p_t = sigmoid(-u)``::

    loss  = alpha_t * exp(-gamma * softplus(u)) * softplus(-u)
    dL/du = alpha_t * exp(-gamma * softplus(u)) * (-gamma * (1 - m) * softplus(-u) - m)

Soft targets, ``b = 1 - p_t = t (1 - p) + (1 - t) p``, ``r = p (1 - p) / b`` (taken in log
space, so it stays finite where ``b`` underflows)::

    loss  = alpha_t * b**gamma * BCE(x, t)
    dL/dx = alpha_t * b**gamma * ((p - t) + gamma * BCE(x, t) * (1 - 2t) * r)

Every term is bounded: the ``gamma * b**(gamma - 1)`` of the chain rule never appears.
QFL's and VFL's closed forms are in :func:`quality_loss` and :func:`vfl_loss`.

Backends (``FOCAL_PLUGIN_FUSED`` environment variable, or :func:`set_fused_backend`):

- ``'auto'`` (default): the first call starts compiling its kernel with
  ``torch.compile(dynamic=True)`` in a background thread and, until it is ready, runs the
  autograd reference (no first-call stall; the switch happens at a time-dependent step, so
  runs are not bit-reproducible: use ``'compile'`` or ``'off'`` for that). One compiled kernel
  serves every shape (it sees 1-D tensors of symbolic length), so varying anchor counts never
  recompile. If compilation fails (e.g. no C++ compiler), a warning is logged once and the
  reference stays. Interpreter exit waits for a compilation in flight (seconds).
- ``'compile'``: compile synchronously on first use (benchmarks, tests).
- ``'eager'``: the same kernels without compilation: the same memory saving, but slower than
  the reference on CPU (each op makes its own pass over memory).
- ``'off'``: always the autograd reference.

Inside a ``torch.compile``'d model the eager kernels are used, so the user's compiler traces
them like any other ops. The fused function is first-order and single-use: a ``create_graph``
backward or a second backward through the same graph (``retain_graph=True``) raises; set the
backend to ``'off'`` for those.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ['BACKENDS', 'fused_kernel', 'fused_loss', 'set_fused_backend', 'get_fused_backend',
           'warm_up']

BACKENDS = ('auto', 'compile', 'eager', 'off')
_logger = logging.getLogger(__name__)


# ---- element-wise kernels (plain torch; compiled by the backends above) --------------------

def _softplus_pair(x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``softplus(x), softplus(-x)`` and ``e = exp(-|x|)`` from one exp and one log1p."""
    e = torch.exp(-x.abs())
    log1p_e = torch.log1p(e)
    return torch.relu(x) + log1p_e, torch.relu(-x) + log1p_e, e


def hard_loss(x: Tensor, positive: Tensor, a_pos: float, a_neg: float, gamma: float,
              with_grad: bool = False):
    """Loss (and, ``with_grad``, dloss/dx) for a bool mask of positives."""
    u = torch.where(positive, x, -x)
    sp_u, ce, e = _softplus_pair(u)  # softplus(u) = -log(1 - p_t), softplus(-u) = BCE
    factor = torch.exp(-gamma * sp_u)
    loss = factor * ce
    loss = torch.where(positive, a_pos * loss, a_neg * loss)  # scalars keep x's dtype
    if not with_grad:
        return loss
    inv = 1 / (1 + e)
    big = u >= 0
    m = torch.where(big, e * inv, inv)            # sigmoid(-u) = 1 - p_t
    one_minus_m = torch.where(big, inv, e * inv)  # sigmoid(u), without the 1 - m cancellation
    d_u = factor * (-gamma * one_minus_m * ce - m)
    return loss, torch.where(positive, a_pos * d_u, -a_neg * d_u)  # dL/dx = (2t - 1) dL/du


def soft_loss(x: Tensor, t: Tensor, a_pos: float, a_neg: float, gamma: float,
              with_grad: bool = False):
    """Loss (and, ``with_grad``, dloss/dx) for soft targets ``t`` in [0, 1]."""
    sp_pos, sp_neg, e = _softplus_pair(x)  # -log(1 - p), -log(p)
    ce = t * sp_neg + (1 - t) * sp_pos
    log_b = torch.logaddexp(torch.log(t) - sp_pos, torch.log1p(-t) - sp_neg)
    weighted_factor = (a_pos * t + a_neg * (1 - t)) * torch.exp(gamma * log_b)
    loss = weighted_factor * ce
    if not with_grad:
        return loss
    inv = 1 / (1 + e)
    # p - t in one subtraction of two accurate terms: (1 - t) - (1 - p) for p > 1/2, where
    # 1 - p computed as 1 - sigmoid(x) would round to 0 at confident logits
    p_minus_t = torch.where(x >= 0, (1 - t) - e * inv, inv * e - t)
    r = torch.exp(-sp_pos - sp_neg - log_b)  # p (1 - p) / b
    return loss, weighted_factor * (p_minus_t + gamma * ce * (1 - 2 * t) * r)


def quality_loss(x: Tensor, y: Tensor, beta: float, with_grad: bool = False):
    """QFL ``BCE(x, y) * |y - p|**beta`` (and, ``with_grad``, dloss/dx) for scores ``y``,
    ``beta > 0`` (``beta == 0`` is plain BCE: the caller keeps it on the reference path, so the
    compiled kernel never branches on the value of ``beta``).

    With ``D = |y - p|`` and ``s = sign(p - y)``: ``dL/dx = s (D**(beta + 1)
    + beta * BCE * p (1 - p) * D**(beta - 1))``, both terms taken from ``log D`` (computed
    without cancellation, as in :func:`._common.log_quality_base`). At the cusp ``D == 0`` the
    gradient is 0, as in the autograd formulation."""
    sp_pos, sp_neg, _ = _softplus_pair(x)  # -log(1 - p), -log(p)
    ce = y * sp_neg + (1 - y) * sp_pos
    a = torch.log(y) - sp_pos      # log(y (1 - p))
    b = torch.log1p(-y) - sp_neg   # log((1 - y) p); y - p = e^a - e^b
    gap = (a - b).abs()
    apart = gap > 0
    log_d = torch.maximum(a, b) + torch.log(-torch.expm1(-torch.where(apart, gap, 1.0)))
    loss = ce * torch.where(apart, torch.exp(beta * log_d), 0.0)  # |0|**beta, beta > 0
    if not with_grad:
        return loss
    # D**(beta - 1) p (1 - p), capped below overflow: only reached for small beta within float
    # rounding of the cusp, where the true slope is huge; finite beats inf there
    cap = 80.0 if x.dtype == torch.float32 else 700.0
    slope = torch.exp(torch.clamp((beta - 1) * log_d - sp_pos - sp_neg, max=cap))
    d_x = torch.exp((beta + 1) * log_d) + beta * ce * slope
    return loss, torch.where(apart, torch.where(b > a, d_x, -d_x), 0.0)


def vfl_loss(x: Tensor, t: Tensor, alpha: float, gamma: float, iou_weighted: float,
             with_grad: bool = False):
    """VFL (and, ``with_grad``, dloss/dx): ``BCE(x, t) * w`` with ``w = t`` (``iou_weighted``
    1.0; else 1) for positives ``t > 0`` and ``alpha * p**gamma`` for negatives, where
    ``dL/dx = alpha p**gamma ((p - t) + gamma (1 - p) BCE)``. ``p**gamma`` is
    ``exp(-gamma * softplus(-x))``: no singular power. ``iou_weighted`` is a float so that the
    compiled kernel has no branch on it."""
    sp_pos, sp_neg, e = _softplus_pair(x)
    ce = t * sp_neg + (1 - t) * sp_pos
    positive = t > 0
    pos_weight = iou_weighted * t + (1 - iou_weighted)
    neg_factor = alpha * torch.exp(-gamma * sp_neg)
    loss = ce * torch.where(positive, pos_weight, neg_factor)
    if not with_grad:
        return loss
    inv = 1 / (1 + e)
    p = torch.where(x >= 0, inv, e * inv)
    p_minus_t = torch.where(x >= 0, (1 - t) - e * inv, p - t)  # as in soft_loss
    d_neg = neg_factor * (p_minus_t + gamma * torch.where(x >= 0, e * inv, inv) * ce)
    return loss, torch.where(positive, pos_weight * p_minus_t, d_neg)


# The loss-and-gradient entry points are separate functions, not closures of one factory:
# the compiler caches (and limits recompilations) per code object.
def hard_loss_and_grad(x, positive, a_pos, a_neg, gamma):
    return hard_loss(x, positive, a_pos, a_neg, gamma, with_grad=True)


def soft_loss_and_grad(x, t, a_pos, a_neg, gamma):
    return soft_loss(x, t, a_pos, a_neg, gamma, with_grad=True)


def quality_loss_and_grad(x, y, beta):
    return quality_loss(x, y, beta, with_grad=True)


def vfl_loss_and_grad(x, t, alpha, gamma, iou_weighted):
    return vfl_loss(x, t, alpha, gamma, iou_weighted, with_grad=True)


# Summed variants for reduction 'sum'/'mean' without weights: the element-wise loss is never
# written to memory (one full-size tensor less to allocate, fill and read back).
def hard_loss_sum_and_grad(x, positive, a_pos, a_neg, gamma):
    loss, grad = hard_loss(x, positive, a_pos, a_neg, gamma, with_grad=True)
    return loss.sum(), grad


def soft_loss_sum_and_grad(x, t, a_pos, a_neg, gamma):
    loss, grad = soft_loss(x, t, a_pos, a_neg, gamma, with_grad=True)
    return loss.sum(), grad


def quality_loss_sum_and_grad(x, y, beta):
    loss, grad = quality_loss(x, y, beta, with_grad=True)
    return loss.sum(), grad


def vfl_loss_sum_and_grad(x, t, alpha, gamma, iou_weighted):
    loss, grad = vfl_loss(x, t, alpha, gamma, iou_weighted, with_grad=True)
    return loss.sum(), grad


Kernels = Dict[str, Callable]
_EAGER: Kernels = {fn.__name__: fn for fn in (
    hard_loss, hard_loss_and_grad, hard_loss_sum_and_grad, soft_loss, soft_loss_and_grad,
    soft_loss_sum_and_grad, quality_loss, quality_loss_and_grad, quality_loss_sum_and_grad,
    vfl_loss, vfl_loss_and_grad, vfl_loss_sum_and_grad)}


# ---- backend selection and background compilation -----------------------------------------

class _CompiledKernels:
    """Compiled kernels, each built once per (name, dtype, device type) and only when first
    needed. Non-blocking requests are compiled one after another by a worker thread
    that ends when its queue is empty. At interpreter exit the queue is dropped and only a
    compilation in flight is waited for (killing it half-way aborts the process)."""

    def __init__(self) -> None:
        self.ready: Dict[tuple, Callable] = {}
        self.queued: set = set()
        self.todo: List[tuple] = []
        self.worker: Optional[threading.Thread] = None
        self.failed: Optional[str] = None
        self.closing = False
        self.lock = threading.Lock()

    def get(self, key: tuple, block: bool) -> Optional[Callable]:
        fn = self.ready.get(key)
        if fn is not None or self.failed is not None:
            return fn
        if block:
            self._build(key)
            return self.ready.get(key)
        with self.lock:
            if key not in self.queued:
                self.queued.add(key)
                self.todo.append(key)
                if self.worker is None and not self.closing:
                    self.worker = threading.Thread(target=self._work, name='focal-compile',
                                                   daemon=True)
                    self.worker.start()
                    _at_threading_exit(self._close)
        return None

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self.todo or self.failed is not None or self.closing:
                    self.worker = None
                    return
                key = self.todo.pop(0)
            self._build(key)

    def _build(self, key: tuple) -> None:
        if key in self.ready:
            return
        name, dtype, device = key
        try:
            compiled = torch.compile(_EAGER[name], dynamic=True)
            with torch.no_grad():  # as inside autograd.Function.forward: same guards
                # compile now, for small and large inputs: the summed kernels get a
                # different reduction strategy (and a size guard) below 4097 elements
                for n in (37, 8191):
                    compiled(*_sample_args(name, dtype, device, n))
            self.ready[key] = compiled
        except Exception as err:  # no C++ compiler, unsupported platform, ...
            if self.closing:  # the interpreter is shutting down under the compiler
                return
            self.failed = f'{type(err).__name__}: {err}'
            _logger.warning('focal_plugin: compiling the fused focal-loss kernels failed (%s); '
                            "the 'exact' sigmoid focal loss, QFL and VFL keep their autograd "
                            'formulations', self.failed)

    def _close(self) -> None:
        self.closing = True
        worker = self.worker
        if worker is not None:
            worker.join()


def _at_threading_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` when the main thread ends, before ``concurrent.futures`` (which the
    compiler uses) shuts down; ``atexit`` would run too late. Registered once."""
    if callback in _EXIT_CALLBACKS:
        return
    _EXIT_CALLBACKS.append(callback)
    register = getattr(threading, '_register_atexit', None)
    (register or atexit.register)(callback)


_EXIT_CALLBACKS: List[Callable[[], None]] = []


def _sample_args(name: str, dtype: torch.dtype, device: str, n: int) -> tuple:
    # n: not 0 or 1, which dynamo would specialize
    x = torch.linspace(-5, 5, n, dtype=dtype, device=device)
    t = (torch.arange(n, device=device) % 3 == 0)
    t = t if name.startswith('hard') else t.to(dtype) * 0.8 + 0.1
    if name.startswith('quality'):
        return x, t, 1.5
    if name.startswith('vfl'):
        return x, t * (torch.arange(n, device=device) % 2), 0.75, 1.5, 1.0
    return x, t, 0.25, 0.75, 1.5


_COMPILED = _CompiledKernels()
_backend = os.environ.get('FOCAL_PLUGIN_FUSED', 'auto')


def set_fused_backend(backend: str) -> None:
    """Choose how the ``'exact'`` sigmoid focal loss runs (see the module docstring)."""
    global _backend
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    _backend = backend


def get_fused_backend() -> str:
    if _backend not in BACKENDS:
        raise ValueError(f'FOCAL_PLUGIN_FUSED must be one of {BACKENDS}, got {_backend!r}')
    return _backend


def _compiled(name: str, x: Tensor, block: bool) -> Optional[Callable]:
    return _COMPILED.get((name, x.dtype, x.device.type), block)


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
        return _EAGER[name]
    return _compiled(name, x, block=backend == 'compile')


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


def warm_up(dtype: torch.dtype = torch.float32, device: str = 'cpu') -> None:
    """Compile every fused kernel for ``dtype``/``device`` now (blocking)."""
    for name in _EAGER:
        _COMPILED.get((name, dtype, torch.device(device).type), block=True)


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
