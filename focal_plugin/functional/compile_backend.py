"""How the fused kernels run: the backend switch and the compile cache.

Backends (``FOCAL_PLUGIN_FUSED`` environment variable, or :func:`set_fused_backend`):

- ``'compile'`` (default): the first call that needs a kernel compiles it with
  ``torch.compile(dynamic=True)`` and waits for it (a one-time stall per kernel and device
  type, measured in ``results/benchmark_losses.md``; the compiler's on-disk cache shortens it
  in later processes), announced by one INFO line per kernel family and device type. Every
  call from then on runs the compiled kernel, so a run is bit-reproducible whatever the
  machine's speed. One compiled kernel serves every shape (it sees 1-D tensors of symbolic
  length), so varying anchor counts never recompile. If compilation fails (e.g. no C++
  compiler), a warning is logged once and the autograd reference serves every call.
  CPU calls with fewer than :data:`CPU_COMPILE_MIN_NUMEL` elements run the same kernels
  uncompiled and never start a compilation: there the compiled kernel saves microseconds per
  call against a stall of seconds (an MMPretrain head's 16 x 10 logits). The rule is by size,
  never by timing, so a given call always takes the same path and stays bit-reproducible.
- ``'auto'``: compile in a background thread while the autograd reference serves the first
  calls (no stall; small CPU calls as under ``'compile'``). The switch happens at a step that
  depends on the machine's speed, so two runs of the same seed differ after it: for
  interactive work, not for results.
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
import os
import tempfile
import threading
from typing import Callable, Dict, List, Optional

import torch

from .fused_kernels import KERNELS, sample_args
from .settings import EnvChoice

__all__ = ['BACKENDS', 'CPU_COMPILE_MIN_NUMEL', 'set_fused_backend', 'get_fused_backend',
           'compiled_kernel', 'worth_compiling', 'warm_up']

BACKENDS = ('compile', 'auto', 'eager', 'off')
# Below this many elements a CPU call runs the kernels uncompiled. Measured (1 thread,
# tools/compile_crossover.py, README "The fast path"): the compiled focal kernel only catches
# up with the uncompiled paths near 1e4 elements and is 0.78x of them at 3.2e4; below the
# threshold it saves at most 0.12 ms per call (QFL 0.6 ms), 8e4 (2e4) calls to repay a 10 s
# compilation.
CPU_COMPILE_MIN_NUMEL = 1 << 15
_logger = logging.getLogger(__name__)


def worth_compiling(x: torch.Tensor) -> bool:
    """Whether a call on ``x`` uses (and if needed compiles) the compiled kernel: always on
    an accelerator, on the CPU from :data:`CPU_COMPILE_MIN_NUMEL` elements. By size only, so
    the same call takes the same path in every process."""
    return x.device.type != 'cpu' or x.numel() >= CPU_COMPILE_MIN_NUMEL


def _compiler_cache_dir() -> str:
    try:  # where inductor keeps its on-disk cache (TORCHINDUCTOR_CACHE_DIR, else a temp dir)
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        return cache_dir()
    except Exception:  # a torch without that helper: its documented default
        return os.environ.get('TORCHINDUCTOR_CACHE_DIR') or os.path.join(
            tempfile.gettempdir(), 'torchinductor_<user>')


def _announce(name: str, dtype: torch.dtype, device: str, blocking: bool) -> None:
    """The one line a user sees before the stall: what, how long, where, how to avoid it."""
    family = name.split('_loss')[0]  # hard / soft (focal), quality (QFL), vfl
    took = ('about 10-20 s with an empty compiler cache, 3-10 s with a warm one'
            if device == 'cpu' else 'seconds; tools/gpu_check.sh measures it')
    how = ('a one-time stall per process' if blocking else
           'in the background; the autograd formulation serves meanwhile')
    _logger.info(
        "focal_plugin: compiling the fused '%s' focal-loss kernels for %s %s with torch.compile "
        '(%s, %s; compiler cache: %s). FOCAL_PLUGIN_FUSED=eager or off skips compiling '
        '(slower at large inputs: README "The fast path").',
        family, device, str(dtype).replace('torch.', ''), how, took, _compiler_cache_dir())


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
        self._announced: set = set()  # (kernel family, device type) already announced

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
            self._build(key, blocking=False)

    def _build(self, key: tuple, blocking: bool = True) -> None:
        if key in self.ready:
            return
        name, dtype, device = key
        family = (name.split('_loss')[0], device)
        if family not in self._announced:
            self._announced.add(family)
            _announce(name, dtype, device, blocking)
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
