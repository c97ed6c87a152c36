"""Safe (weights-only) loading of MMEngine checkpoints, by an allow-list.

Since torch 2.6 ``torch.load`` unpickles with ``weights_only=True`` by default: only tensors,
containers and allow-listed types. MMEngine 0.10 checkpoints also hold the MessageHub's
``HistoryBuffer`` objects (their numpy arrays and scalars, and their statistics methods pickled
as ``getattr(HistoryBuffer, 'min')``), so ``--resume`` fails with "Weights only load failed".
Turning weights-only loading off for the process (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) would
also turn it off for every downloaded ``load_from`` file, which is the attack it exists to stop.
Instead, ``import focal_plugin`` allow-lists exactly what these checkpoints contain (found with
``torch.serialization.get_unsafe_globals_in_checkpoint`` on RetinaNet, GFL and stress-test
checkpoints): ``HistoryBuffer``, numpy's array/scalar reconstruction and its numeric dtypes,
and ``getattr`` (the weights-only unpickler calls only allow-listed functions, so what
``getattr`` returns is stored, never called). The hook's own checkpoint entry is plain data.
"""
from __future__ import annotations

import builtins

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['MMENGINE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoints']

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

_NUMERIC = ('Bool', 'Float16', 'Float32', 'Float64', 'Int8', 'Int16', 'Int32', 'Int64', 'UInt8',
            'UInt16', 'UInt32', 'UInt64', 'Long', 'ULong', 'LongLong', 'ULongLong')
MMENGINE_CHECKPOINT_GLOBALS = [HistoryBuffer, builtins.getattr, np.ndarray, np.dtype,
                               _reconstruct, scalar] + [
    getattr(np.dtypes, name + 'DType') for name in _NUMERIC
    if hasattr(np, 'dtypes') and hasattr(np.dtypes, name + 'DType')]


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(..., weights_only=True)`` read MMEngine checkpoints (process-wide,
    nothing else allowed)."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
