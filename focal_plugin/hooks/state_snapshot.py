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

import torch
from torch import Tensor, nn

__all__ = ['BufferSnapshot']


class BufferSnapshot:
    """Copies of the changeable buffers of ``model``, refreshed by :meth:`take`."""

    def __init__(self, model: nn.Module):
        # (module, its buffer's name, qualified name) for every persistent buffer, in model
        # order; the tensor itself is looked up at each use: a module may replace a buffer by
        # assignment (``self.buf = new``), and the live one is the one to copy and restore
        self._entries: list[tuple[nn.Module, str, str]] = []
        for module_name, module in model.named_modules():
            non_persistent = getattr(module, '_non_persistent_buffers_set', set())
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None and name not in non_persistent:
                    full = f'{module_name}.{name}' if module_name else name
                    self._entries.append((module, name, full))
        self._copies: dict[str, Tensor] = {}

    def _live(self):
        """(module, qualified name, the buffer now) for every entry still holding a tensor."""
        for module, local, full in self._entries:
            buffer = getattr(module, local, None)
            if isinstance(buffer, Tensor):
                yield module, full, buffer

    def take(self) -> None:
        """Copy the buffers of the modules that are in training mode right now."""
        names, sources = [], []
        for module, name, buffer in self._live():
            if module.training:
                names.append(name)
                sources.append(buffer)
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
                if only_nonfinite and (not buffer.is_floating_point()
                                       or bool(torch.isfinite(buffer).all())):
                    continue
                if buffer.shape != copy.shape or not torch.equal(buffer, copy):
                    changed.append(name)
                    if buffer.shape == copy.shape:
                        buffer.copy_(copy)
                    else:  # replaced by a tensor of another shape: put the copy back
                        module = next(m for m, _, full in self._entries if full == name)
                        setattr(module, name.rsplit('.', 1)[-1], copy.clone())
        return changed
