"""No checkpoint of a non-finite model: the guard around ``CheckpointHook``'s saves.

Why not only MMEngine's public ``before_save_checkpoint`` stage (mmengine 0.10):

- ``CheckpointHook._save_checkpoint_with_step`` deletes the oldest checkpoint (``max_keep_ckpts``)
  and points the MessageHub's ``last_ckpt`` at the new file *before* it calls
  ``Runner.save_checkpoint``; a refusal inside that stage comes after a good checkpoint is gone.
- ``Runner.save_checkpoint`` is ``@master_only``: the stage runs on rank 0 alone, so a refusal
  there cannot be agreed across ranks (a collective on one rank deadlocks), and its only veto
  is an exception, which ends training even under ``policy='warn'``.

The guard therefore wraps ``CheckpointHook``'s two save methods on the hook *instance* (undone
after training): they run on every rank and before anything is touched, so a refusal leaves
every file as it was and every rank takes the same decision. ``before_save_checkpoint``
remains the last line of defence for saves that bypass ``CheckpointHook``
(:func:`check_checkpoint`).
"""
from __future__ import annotations

import os.path as osp
from typing import Callable

from mmengine.hooks import CheckpointHook
from torch import Tensor

from .errors import NonFiniteCheckpointError
from .events import checked_state, float_state, nonfinite_tensor_list
from .finite_check import any_nonfinite
from .interception import InstancePatches

__all__ = ['CheckpointGuard', 'check_checkpoint', 'save_last_good_state']

Named = list[tuple[str, Tensor]]


class CheckpointGuard:
    """Wraps the save methods of every ``CheckpointHook`` of a runner.

    Args:
        state_of: the model's float tensors, by name (called at each save).
        is_nonfinite: the verdict on them, agreed across ranks.
        on_refused: called instead of the save, with the runner and the tensors.
        on_saved: called after a regular save went through, with the runner.
    """

    SAVE_METHODS = ('_save_checkpoint', '_save_best_checkpoint')

    def __init__(self, state_of: Callable[[object], Named], is_nonfinite: Callable[[Named], bool],
                 on_refused: Callable[[object, Named], None],
                 on_saved: Callable[[object], None]):
        self.state_of = state_of
        self.is_nonfinite = is_nonfinite
        self.on_refused = on_refused
        self.on_saved = on_saved

    def install(self, hooks, patches: InstancePatches) -> int:
        """Guard the ``CheckpointHook`` instances among ``hooks``; returns how many."""
        guarded = 0
        for hook in hooks:
            if not isinstance(hook, CheckpointHook):
                continue
            for method in self.SAVE_METHODS:
                if callable(getattr(hook, method, None)):
                    patches.replace(hook, method,
                                    lambda original, m=method: self._guarded(m, original))
            guarded += 1
        return guarded

    def _guarded(self, method: str, original):
        def save(runner, *args, **kwargs):
            named = self.state_of(runner)
            if self.is_nonfinite(named):
                self.on_refused(runner, named)
                return None
            result = original(runner, *args, **kwargs)
            if method == '_save_checkpoint':
                self.on_saved(runner)
            return result
        return save


def check_checkpoint(checkpoint: dict, iter: int, last_good: str | None,
                     max_listed: int, inf_allowed: frozenset = frozenset()) -> None:
    """Raise :class:`NonFiniteCheckpointError` if the checkpoint's ``state_dict`` holds NaN/Inf
    (rank 0 only, inside ``Runner.save_checkpoint``: raising is the only veto there);
    ``inf_allowed``: tensors whose +-inf are legitimate (:func:`.events.checked_state`)."""
    named = checked_state(float_state(checkpoint.get('state_dict', {})), inf_allowed)
    if not any_nonfinite([[t for _, t in named]])[0]:
        return
    bad = nonfinite_tensor_list([n for n, _ in named], [t for _, t in named])
    listed = ', '.join(f"{t['name']} (NaN={t['nan']}, Inf={t['posinf'] + t['neginf']})"
                       for t in bad[:max_listed])
    raise NonFiniteCheckpointError(
        f'GradientSanitizerHook refused to write a checkpoint at iter {iter}: {len(bad)} '
        f'tensor(s) of its state_dict hold NaN/Inf: {listed}. Last good checkpoint: {last_good}')


def save_last_good_state(runner, rank: int) -> str:
    """Save the runner's (finite) state as ``last_good_iter_N.pth`` and point
    ``last_checkpoint`` at it, so that ``resume=True`` continues from the last good state."""
    filename = f'last_good_iter_{runner.iter + 1}.pth'
    runner.save_checkpoint(runner.work_dir, filename, by_epoch=False)
    saved = osp.join(runner.work_dir, filename)
    if rank == 0:
        with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
            f.write(saved)
    return saved
