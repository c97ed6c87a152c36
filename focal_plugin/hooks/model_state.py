"""The model's own state as the hook checks, restores and saves it, looked up at each use.

Nothing is captured once in ``before_train``: a model may grow during training (a head
attached, a param group added for progressive unfreezing), and a module may replace a buffer by
assignment. Parameter names, the buffers a forward pass can change and the state a checkpoint
holds are read from the live model whenever they are needed.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

from torch import Tensor, nn

from .events import checked_state, float_state, infinite_before_training
from .state_snapshot import BufferSnapshot

__all__ = ['ModelState']

Named = list[tuple[str, Tensor]]


class ModelState:
    """Args:
        model: the model without its DDP wrapper.
        keep_copies: keep a snapshot of the changeable buffers before each update (False
            under ``warn``, which restores nothing).
    """

    def __init__(self, model: nn.Module, keep_copies: bool = True):
        self.model = model
        self.buffers = BufferSnapshot(model, keep_copies)
        # tensors with +-inf (and no NaN) before training: legitimate values, not corruption
        self.inf_allowed: frozenset = infinite_before_training(self.tensors(checked=False))

    def close(self) -> None:
        """Stop watching the model's structure (see :class:`.BufferSnapshot`)."""
        self.buffers.close()

    def tensors(self, checked: bool = True) -> Named:
        """The model's float/complex tensors by name, as the finiteness rule sees them (see
        :func:`.events.checked_state` for the +-inf rule)."""
        named = float_state(self.model.state_dict(keep_vars=True))
        return checked_state(named, self.inf_allowed) if checked else named

    def parameter_names(self) -> dict[int, str]:
        """``id(parameter) -> name``, parameters added during training included."""
        return {id(p): name for name, p in self.model.named_parameters()}

    def changeable_buffers(self) -> Named:
        """The buffers this update's forward passes can change, less those whose +-inf were
        there before training (the checkpoint guard still checks them for NaN)."""
        return [(n, b) for n, b in self.buffers.changeable() if n not in self.inf_allowed]

    def without_open_update(self, update_open: bool) -> ContextManager[list]:
        """While an update is open (an accumulation window before its step: the weights are
        those of the snapshot's time), the buffers of before its forward passes: the state a
        checkpoint due now holds instead of a non-finite live one (see
        :mod:`.checkpoint_guard`)."""
        return self.buffers.standing_in() if update_open else contextlib.nullcontext([])
