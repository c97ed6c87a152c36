"""Fused ``'exact'`` sigmoid focal loss: closed-form backward, only logits and targets saved.

The autograd formulation (:func:`.sigmoid_focal.sigmoid_focal_loss`, kept as the reference)
stores several full-size intermediates for the backward pass. Here the derivative is written
out, with the singular factor already cancelled, and recomputed from ``(x, t)`` in backward.

Hard targets, signed logit ``u = (2t - 1) x``, ``m = 1 - p_t = sigmoid(-u)``::

    loss  = alpha_t * exp(-gamma * softplus(u)) * softplus(-u)
    dL/du = alpha_t * exp(-gamma * softplus(u)) * (-gamma * (1 - m) * softplus(-u) - m)

Soft targets, ``b = 1 - p_t = t (1 - p) + (1 - t) p``, ``r = p (1 - p) / b`` (taken in log
space, so it stays finite where ``b`` underflows)::

    loss  = alpha_t * b**gamma * BCE(x, t)
    dL/dx = alpha_t * b**gamma * ((p - t) + gamma * BCE(x, t) * (1 - 2t) * r)

Every term is bounded: the ``gamma * b**(gamma - 1)`` of the chain rule never appears.

Backends (``FOCAL_PLUGIN_FUSED`` environment variable, or :func:`set_fused_backend`):

- ``'auto'`` (default): the first call starts compiling the kernels with
  ``torch.compile(dynamic=True)`` in a background thread and, until they are ready, runs the
  autograd reference (no first-call stall). One compiled set serves every shape (the kernels
  see 1-D tensors of symbolic length), so varying anchor counts never recompile. If
  compilation fails (e.g. no C++ compiler), a warning is logged once and the reference stays.
- ``'compile'``: compile synchronously on first use (benchmarks, tests).
- ``'eager'``: the closed-form kernels without compilation: the same memory saving, but
  slower than the reference on CPU (each op makes its own pass over memory).
- ``'off'``: always the autograd reference.

Inside a ``torch.compile``'d model the eager kernels are used, so the user's compiler traces
them like any other ops. The fused function is first-order only (``create_graph`` backward of
it raises); set the backend to ``'off'`` for higher-order gradients.
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

__all__ = ['BACKENDS', 'fused_backend_for', 'fused_sigmoid_focal_loss', 'set_fused_backend',
           'get_fused_backend', 'warm_up', 'compiled_kernels_ready']

BACKENDS = ('auto', 'compile', 'eager', 'off')
_logger = logging.getLogger(__name__)


# ---- element-wise kernels (plain torch; compiled by the backends above) --------------------

def _softplus_pair(x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``softplus(x), softplus(-x)`` and ``e = exp(-|x|)`` from one exp and one log1p."""
    e = torch.exp(-x.abs())
    log1p_e = torch.log1p(e)
    return torch.relu(x) + log1p_e, torch.relu(-x) + log1p_e, e


def _alpha_t(targets: Tensor, a_pos: float, a_neg: float) -> Tensor:
    return a_pos * targets + a_neg * (1 - targets)


def _hard_terms(x: Tensor, positive: Tensor, gamma: float):
    u = torch.where(positive, x, -x)
    sp_u, ce, e = _softplus_pair(u)  # softplus(u) = -log(1 - p_t), softplus(-u) = BCE
    return u, ce, torch.exp(-gamma * sp_u), e


def hard_forward(x: Tensor, positive: Tensor, a_pos: float, a_neg: float,
                 gamma: float) -> Tensor:
    _, ce, factor, _ = _hard_terms(x, positive, gamma)
    loss = factor * ce
    return torch.where(positive, a_pos * loss, a_neg * loss)  # keeps x's dtype


def hard_backward(x: Tensor, positive: Tensor, grad: Tensor, a_pos: float, a_neg: float,
                  gamma: float) -> Tensor:
    u, ce, factor, e = _hard_terms(x, positive, gamma)
    inv = 1 / (1 + e)
    big = u >= 0
    m = torch.where(big, e * inv, inv)          # sigmoid(-u) = 1 - p_t
    one_minus_m = torch.where(big, inv, e * inv)  # sigmoid(u), without the 1 - m cancellation
    d_u = factor * (-gamma * one_minus_m * ce - m)
    return torch.where(positive, a_pos * d_u, -a_neg * d_u) * grad  # dL/dx = (2t - 1) dL/du


def _soft_terms(x: Tensor, t: Tensor, gamma: float):
    sp_pos, sp_neg, e = _softplus_pair(x)  # -log(1 - p), -log(p)
    ce = t * sp_neg + (1 - t) * sp_pos
    log_b = torch.logaddexp(torch.log(t) - sp_pos, torch.log1p(-t) - sp_neg)
    return sp_pos, sp_neg, e, ce, log_b, torch.exp(gamma * log_b)


def soft_forward(x: Tensor, t: Tensor, a_pos: float, a_neg: float, gamma: float) -> Tensor:
    *_, ce, _, factor = _soft_terms(x, t, gamma)
    return _alpha_t(t, a_pos, a_neg) * factor * ce


def soft_backward(x: Tensor, t: Tensor, grad: Tensor, a_pos: float, a_neg: float,
                  gamma: float) -> Tensor:
    sp_pos, sp_neg, e, ce, log_b, factor = _soft_terms(x, t, gamma)
    inv = 1 / (1 + e)
    big = x >= 0
    # p - t in one subtraction of two accurate terms: (1 - t) - (1 - p) for p > 1/2, where
    # 1 - p computed as 1 - sigmoid(x) would round to 0 at confident logits
    p_minus_t = torch.where(big, (1 - t) - e * inv, inv * e - t)
    r = torch.exp(-sp_pos - sp_neg - log_b)  # p (1 - p) / b
    d_x = p_minus_t + gamma * ce * (1 - 2 * t) * r
    return _alpha_t(t, a_pos, a_neg) * factor * d_x * grad


Kernels = Dict[Tuple[str, bool], Callable]  # (name, grad is a 0-d scalar) -> kernel
_EAGER: Kernels = {(kind + '_' + stage, scalar): fn
                   for kind, stage, fn in (('hard', 'forward', hard_forward),
                                           ('hard', 'backward', hard_backward),
                                           ('soft', 'forward', soft_forward),
                                           ('soft', 'backward', soft_backward))
                   for scalar in ((False, True) if stage == 'backward' else (False,))}


# ---- backend selection and background compilation -----------------------------------------

class _CompiledKernels:
    """Compiled kernels, each built once per (name, scalar grad, dtype, device type) and only
    when first needed. Non-blocking requests are compiled one after another by a worker thread
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
        (name, scalar_grad), dtype, device = key[:2], key[2], key[3]
        try:
            compiled = torch.compile(_EAGER[name, scalar_grad], dynamic=True)
            compiled(*_sample_args(name, dtype, device, scalar_grad))  # compile now
            self.ready[key] = compiled
        except Exception as err:  # no C++ compiler, unsupported platform, ...
            if self.closing:  # the interpreter is shutting down under the compiler
                return
            self.failed = f'{type(err).__name__}: {err}'
            _logger.warning('focal_plugin: compiling the fused focal-loss kernels failed (%s); '
                            "the 'exact' sigmoid focal loss keeps its autograd formulation",
                            self.failed)


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


def _sample_args(name: str, dtype: torch.dtype, device: str, scalar_grad: bool) -> tuple:
    n = 37  # not 0 or 1, which dynamo would specialize
    x = torch.linspace(-5, 5, n, dtype=dtype, device=device)
    t = (torch.arange(n, device=device) % 3 == 0)
    t = t if name.startswith('hard') else t.to(dtype) * 0.8 + 0.1
    args = [x, t]
    if name.endswith('backward'):
        args.append(torch.ones((), dtype=dtype, device=device) if scalar_grad
                    else torch.ones(n, dtype=dtype, device=device))
    return (*args, 0.25, 0.75, 1.5)


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


def _kernel(name: str, scalar_grad: bool, x: Tensor, block: bool) -> Optional[Callable]:
    return _COMPILED.get((name, scalar_grad, x.dtype, x.device.type), block)


def fused_backend_for(x: Tensor, targets: Tensor) -> Optional[str]:
    """How this call runs: ``'eager'`` or ``'compile'`` kernels, or None for the autograd
    reference (backend 'off', targets that need a gradient, 16-bit logits, which the caller
    upcasts first, or, in 'auto' mode, a compiled forward kernel not built yet: its
    compilation, and the backward's, then start in the background)."""
    backend = get_fused_backend()
    if backend == 'off' or targets.requires_grad or x.dtype not in (torch.float32,
                                                                     torch.float64):
        return None
    if backend == 'eager' or torch.compiler.is_compiling():
        return 'eager'
    kind = 'hard' if targets.dtype == torch.bool else 'soft'
    block = backend == 'compile'
    backward_ready = _kernel(kind + '_backward', False, x, block) is not None
    if _kernel(kind + '_forward', False, x, block) is None or not backward_ready:
        return None
    return 'compile'


def warm_up(dtype: torch.dtype = torch.float32, device: str = 'cpu') -> None:
    """Compile every fused kernel for ``dtype``/``device`` now (blocking)."""
    for name, scalar_grad in _EAGER:
        _COMPILED.get((name, scalar_grad, dtype, torch.device(device).type), block=True)


def compiled_kernels_ready() -> int:
    """How many compiled kernels exist (in 'auto' mode they appear in the background)."""
    return len(_COMPILED.ready)


# ---- the autograd function ------------------------------------------------------------------

def _pick(backend: str, name: str, scalar_grad: bool, x: Tensor) -> Callable:
    """The compiled kernel if built (a variant first met in backward is built in the
    background meanwhile, or now in 'compile' mode), else the eager one: same math."""
    if backend == 'compile':
        compiled = _kernel(name, scalar_grad, x, block=get_fused_backend() == 'compile')
        if compiled is not None:
            return compiled
    return _EAGER[name, scalar_grad]


class _FusedSigmoidFocal(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, targets: Tensor, backend: str, a_pos: float, a_neg: float,
                gamma: float) -> Tensor:
        kind = 'hard' if targets.dtype == torch.bool else 'soft'
        ctx.save_for_backward(x, targets)
        ctx.args = (backend, kind, a_pos, a_neg, gamma)
        # element-wise kernels on 1-D views: one compiled graph serves every shape
        loss = _pick(backend, kind + '_forward', False, x)(x.reshape(-1), targets.reshape(-1),
                                                            a_pos, a_neg, gamma)
        return loss.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, targets = ctx.saved_tensors
        backend, kind, a_pos, a_neg, gamma = ctx.args
        # The backward of a sum is one value expanded to full size: pass it as a 0-d tensor
        # rather than materializing it.
        scalar_grad = grad.numel() > 1 and all(s == 0 for s in grad.stride())
        g = grad.reshape(-1)[0] if scalar_grad else grad.reshape(-1)
        kernel = _pick(backend, kind + '_backward', scalar_grad, x)
        d_x = kernel(x.reshape(-1), targets.reshape(-1), g, a_pos, a_neg, gamma)
        return d_x.view(x.shape), None, None, None, None, None


def fused_sigmoid_focal_loss(x: Tensor, targets: Tensor, alpha: Optional[float],
                             gamma: float, backend: str = 'compile') -> Tensor:
    """Element-wise exact focal loss of float32/float64 logits ``x``; ``targets`` a bool mask
    of positives (hard labels) or soft labels in ``x``'s dtype; ``backend`` from
    :func:`fused_backend_for`. Arguments are not checked here:
    :func:`.sigmoid_focal.sigmoid_focal_loss` validates and dispatches."""
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    return _FusedSigmoidFocal.apply(x, targets, backend, a_pos, a_neg, gamma)
