"""A copy of the model's buffers, taken before the forward passes of an update.

Skipping ``optimizer.step`` does not fully drop a bad batch: its forward pass already updated
BatchNorm running statistics (and ``num_batches_tracked``), which a NaN batch turns into NaN
(and which a checkpoint guard would then refuse forever). Restoring the buffers makes a skipped
update a true no-op.

Only buffers that a forward pass can change are copied: persistent buffers (the model state a
checkpoint holds; non-persistent ones such as the data preprocessor's mean/std are constants)
of modules in training mode (by convention a module in eval mode, e.g. the frozen BatchNorms of
a detector backbone with ``norm_eval=True``, leaves its buffers alone). On CPU every copied
tensor costs a few microseconds, so this keeps the per-update cost near zero for detectors.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from .finite_check import real_view

__all__ = ['BufferSnapshot']


def _persistent_buffers(model: nn.Module):
    """(module, its buffer's name, qualified name) of every persistent buffer, in model order."""
    for module_name, module in model.named_modules():
        non_persistent = getattr(module, '_non_persistent_buffers_set', set())
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in non_persistent:
                yield module, name, f'{module_name}.{name}' if module_name else name


class BufferSnapshot:
    """Copies of the changeable buffers of ``model``, refreshed by :meth:`take`.

    The modules and their buffers are not captured once: a model may grow during training (a
    head attached, a module unfrozen), and a module may replace a buffer by assignment
    (``self.buf = new``); the live ones are the ones to copy and restore. Walking the module
    tree at every update would cost about a millisecond on a ResNet-50 (CPU), so the list is
    rebuilt only after torch's global registration hooks saw a module or buffer registered
    (anywhere; a false alarm costs one walk). :meth:`close` removes those hooks.
    """

    def __init__(self, model: nn.Module, keep_copies: bool = True):
        self._model = model
        self._keep_copies = keep_copies  # False: only track which buffers can change (warn)
        self._entries: list[tuple[nn.Module, str, str]] = []
        self._changeable: list[tuple[nn.Module, str, str]] = []  # of training-mode modules
        self._copies: dict[str, Tensor] = {}
        self._stale = True
        this = weakref.ref(self)  # the global hooks must not keep a finished run's copies

        def mark_stale(*args):
            snapshot = this()
            if snapshot is not None:
                snapshot._stale = True
        self._handles = [torch_module.register_module_module_registration_hook(mark_stale),
                         torch_module.register_module_buffer_registration_hook(mark_stale)]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _live(self):
        """(module, qualified name, the buffer now) for every entry still holding a tensor."""
        for module, local, full in self._entries:
            buffer = module._buffers.get(local)  # what `module.<local>` returns, cheaper
            if isinstance(buffer, Tensor):
                yield module, full, buffer

    def changeable(self) -> list[tuple[str, Tensor]]:
        """(name, live buffer) for every buffer a forward pass of this update can have
        changed (those of the modules in training mode at :meth:`take`)."""
        live = ((full, module._buffers.get(local)) for module, local, full in self._changeable)
        return [(name, buffer) for name, buffer in live if isinstance(buffer, Tensor)]

    def take(self) -> None:
        """Copy the buffers of the modules that are in training mode right now."""
        if self._stale:
            self._stale = False
            self._entries = list(_persistent_buffers(self._model))
        names, sources = [], []
        self._changeable = []
        for module, local, name in self._entries:
            buffer = module._buffers.get(local)
            if module.training and isinstance(buffer, Tensor):
                names.append(name)
                sources.append(buffer)
                self._changeable.append((module, local, name))
        if not self._keep_copies:
            return
        if [n for n in self._copies] != names or any(  # training modules or shapes changed
                c.shape != b.shape or c.dtype != b.dtype
                for c, b in zip(self._copies.values(), sources)):
            self._copies = {n: b.detach().clone() for n, b in zip(names, sources)}
            return
        if not sources:
            return
        with torch.no_grad():
            if hasattr(torch, '_foreach_copy_'):
                torch._foreach_copy_(list(self._copies.values()), sources)
            else:  # pragma: no cover - old torch
                for copy, buffer in zip(self._copies.values(), sources):
                    copy.copy_(buffer)

    def restore(self, only_nonfinite: bool = False) -> list[str]:
        """Copy the snapshot back; with ``only_nonfinite``, only into buffers holding NaN/Inf.
        Returns the names of the buffers whose values this changed (diagnostic path)."""
        changed = []
        with torch.no_grad():
            for _, name, buffer in self._live():
                copy = self._copies.get(name)
                if copy is None:
                    continue
                view = real_view(buffer)
                if only_nonfinite and (view is None or bool(torch.isfinite(view).all())):
                    continue
                if buffer.shape != copy.shape or not torch.equal(buffer, copy):
                    changed.append(name)
                    self._put(name, buffer, copy)
        return changed

    @contextlib.contextmanager
    def standing_in(self) -> Iterator[list[str]]:
        """Within the block, every buffer holds its snapshot value (the state of before this
        update's forward passes); afterwards the live values come back. Yields the names of
        the buffers that differed."""
        swapped = []
        with torch.no_grad():
            for _, name, buffer in self._live():
                copy = self._copies.get(name)
                if copy is not None and (buffer.shape != copy.shape
                                         or not torch.equal(buffer, copy)):
                    swapped.append((name, buffer.detach().clone()))
                    self._put(name, buffer, copy)
        try:
            yield [name for name, _ in swapped]
        finally:
            with torch.no_grad():
                live = dict((name, buffer) for _, name, buffer in self._live())
                for name, value in swapped:
                    self._put(name, live[name], value)

    def _put(self, name: str, buffer: Tensor, value: Tensor) -> None:
        if buffer.shape == value.shape:
            buffer.copy_(value)
        else:  # replaced by a tensor of another shape: put a tensor of the value's shape back
            module = next(m for m, _, full in self._entries if full == name)
            setattr(module, name.rsplit('.', 1)[-1], value.clone())
