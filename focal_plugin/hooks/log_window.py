"""Keep the NaN/Inf of a contained update out of the log's window averages.

MMEngine logs a training scalar (``loss``, ``loss_cls``, ...) as its mean over the last
``window_size`` iterations (``LogProcessor``, default 10): ``RuntimeInfoHook`` pushes each
iteration's step outputs into the ``MessageHub`` and ``LoggerHook`` averages them. A NaN loss
of an update the hook skipped (or sanitized) stays in that window, so the next ten log lines
read ``loss: nan`` while the run trains on: the run looks dead. The hook therefore takes the
non-finite values of the iterations of such an update back out of the history buffers (after
``RuntimeInfoHook`` pushed them, before ``LoggerHook`` reads them); the event itself is in the
hook's own log line, in ``train/nonfinite_skipped`` / ``nonfinite_sanitized`` on every
following line and in the JSON report. Under ``'warn'`` the update is applied and the NaN is
the truth of the run, so it stays.

Only public MessageHub/HistoryBuffer API: ``log_scalars`` (the live dict), ``HistoryBuffer.data``
and its constructor.
"""
from __future__ import annotations

import numpy as np
from mmengine.logging import HistoryBuffer

__all__ = ['CONTAINED_ACTIONS', 'forget_nonfinite_scalars']

# actions (``policy.Action`` values) after which training goes on with the update contained
CONTAINED_ACTIONS = frozenset({'skipped', 'sanitized'})


def forget_nonfinite_scalars(message_hub, iterations: int, prefix: str = 'train/') -> list:
    """Remove the NaN/Inf values among the last ``iterations`` entries of every ``prefix``
    scalar in ``message_hub``; a scalar left with no value is removed (its next update creates
    it again). Returns the keys changed."""
    changed = []
    scalars = message_hub.log_scalars
    for key, buffer in list(scalars.items()):
        if not key.startswith(prefix):
            continue
        values, counts = buffer.data
        start = max(len(values) - iterations, 0)
        keep = np.ones(len(values), dtype=bool)
        keep[start:] = np.isfinite(values[start:].astype(np.float64))
        if keep.all():
            continue
        changed.append(key)
        if not keep.any():
            del scalars[key]
        else:
            scalars[key] = HistoryBuffer(values[keep].tolist(), counts[keep].tolist(),
                                         buffer.max_length)
    return changed
