"""How the fused kernels run: the backend switch and the compile cache.

Backends (``FOCAL_PLUGIN_FUSED`` environment variable, or :func:`set_fused_backend`):

- ``'compile'`` (default): the first call that needs a kernel compiles it with
  ``torch.compile(dynamic=True)`` and waits for it (a one-time stall per kernel and device
  type, measured in ``results/benchmark_losses.md``; the compiler's on-disk cache shortens it
  in later processes). Every call from then on runs the compiled kernel, so a run is
  bit-reproducible whatever the machine's speed. One compiled kernel serves every shape (it
  sees 1-D tensors of symbolic length), so varying anchor counts never recompile. If
  compilation fails (e.g. no C++ compiler), a warning is logged once and the autograd
  reference serves every call.
- ``'auto'``: compile in a background thread while the autograd reference serves the first
  calls (no stall). The switch happens at a step that depends on the machine's speed, so two
  runs of the same seed differ after it: for interactive work, not for results.
- ``'eager'``: the same kernels without compilation: the same memory saving, but slower than
  the reference on CPU (each op makes its own pass over memory).
- ``'off'``: the autograd reference (but targets that need a gradient: see :mod:`.fused`).

Interpreter exit and a compilation in flight (``'auto'``): the worker is a daemon thread (a training
script must not hang on it), and an ``atexit`` handler waits for the compilation it is
running (a daemon thread killed inside the compiler can abort the process). ``atexit`` runs
after ``threading``'s shutdown has closed the compiler's thread pools, so a compilation still
running then fails; Python's only earlier exit hook is the private
``threading._register_atexit``. Instead of reaching for it, a failure is *reported by the next
caller* (the training thread, on its next loss call), never by the worker: a compilation that
fails because the interpreter is exiting has no next caller and stays silent.
"""
from __future__ import annotations

import atexit
import logging
import threading
from typing import Callable, Dict, List, Optional

import torch

from .fused_kernels import KERNELS, sample_args
from .settings import EnvChoice

__all__ = ['BACKENDS', 'set_fused_backend', 'get_fused_backend', 'compiled_kernel', 'warm_up']

BACKENDS = ('compile', 'auto', 'eager', 'off')
_logger = logging.getLogger(__name__)


class CompiledKernels:
    """Compiled kernels, each built once per (name, dtype, device type) and only when first
    needed. Non-blocking requests are compiled one after another by a worker thread that ends
    when its queue is empty; a failure is logged once, by the first caller that meets it."""

    def __init__(self) -> None:
        self.ready: Dict[tuple, Callable] = {}
        self.queued: set = set()
        self.todo: List[tuple] = []
        self.worker: Optional[threading.Thread] = None
        self.failed: Optional[str] = None
        self.closing = False
        self.lock = threading.Lock()
        self._exit_registered = False
        self._reported = False

    def get(self, key: tuple, block: bool) -> Optional[Callable]:
        fn = self.ready.get(key)
        if fn is None and self.failed is None and block:
            self._build(key)
            fn = self.ready.get(key)
        if fn is not None or self.failed is not None:
            self._report_failure()
            return fn
        with self.lock:
            if key not in self.queued:
                self.queued.add(key)
                self.todo.append(key)
                if self.worker is None and not self.closing:
                    self.worker = threading.Thread(target=self._work, name='focal-compile',
                                                   daemon=True)
                    self.worker.start()
                    if not self._exit_registered:
                        atexit.register(self.close)
                        self._exit_registered = True
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
            compiled = torch.compile(KERNELS[name], dynamic=True)
            with torch.no_grad():  # as inside autograd.Function.forward: same guards
                # compile now, at a size like a detector's per-level call: element-wise
                # kernels keep one graph for every size (the size only seeds tuning hints)
                compiled(*sample_args(name, dtype, device, 1 << 16))
            self.ready[key] = compiled
        except Exception as err:  # no C++ compiler, unsupported platform, exit, ...
            if not self.closing:
                self.failed = f'{type(err).__name__}: {err}'

    def _report_failure(self) -> None:
        if self.failed is None or self._reported:
            return
        self._reported = True
        _logger.warning('focal_plugin: compiling the fused focal-loss kernels failed (%s); '
                        "the 'exact' sigmoid focal loss, QFL and VFL keep their autograd "
                        'formulations', self.failed)

    def close(self) -> None:
        """Drop the queue and wait for the compilation in flight (the ``atexit`` handler)."""
        self.closing = True
        worker = self.worker
        if worker is not None:
            worker.join()


_COMPILED = CompiledKernels()
_backend = EnvChoice('FOCAL_PLUGIN_FUSED', BACKENDS, 'compile', 'backend')


def set_fused_backend(backend: str) -> None:
    """Choose how the ``'exact'`` sigmoid focal loss, QFL and VFL run (see the module
    docstring)."""
    _backend.set(backend)


def get_fused_backend() -> str:
    return _backend.get()


def compiled_kernel(name: str, dtype: torch.dtype, device_type: str,
                    block: bool) -> Optional[Callable]:
    """The compiled kernel ``name``, or None while (``block=False``) it is being compiled or
    after compilation failed."""
    return _COMPILED.get((name, dtype, device_type), block)


def warm_up(dtype: torch.dtype = torch.float32, device: str = 'cpu') -> None:
    """Compile every fused kernel for ``dtype``/``device`` now (blocking)."""
    for name in KERNELS:
        compiled_kernel(name, dtype, torch.device(device).type, block=True)
