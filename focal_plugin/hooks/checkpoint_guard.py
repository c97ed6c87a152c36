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
every file as it was and every rank takes the same decision. ``_save_best_checkpoint`` is
checked only when it is about to write (``save_best`` set and a score better than the best):
one refused state is one refusal, not one more per validation. ``before_save_checkpoint``
remains the last line of defence for saves that bypass ``CheckpointHook``
(:func:`check_checkpoint`).

A save due inside an accumulation window comes before the window's verdict: its forward passes
may already have put NaN into BatchNorm statistics while no update was applied. ``stand_in``
then offers the state the run has once that window is dropped (the buffers of before it; the
weights have not changed since), and that state is saved instead of none.
"""
from __future__ import annotations

import contextlib
import os.path as osp
from typing import Callable, ContextManager

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
        on_saved: called after a regular save went through, with the runner and the names of
            the buffers ``stand_in`` replaced (empty for a save of the live state).
        stand_in: a context in which the model holds a state that may be saved instead of a
            non-finite live one, yielding the names of the tensors it replaced.
    """

    SAVE_METHODS = ('_save_checkpoint', '_save_best_checkpoint')

    def __init__(self, state_of: Callable[[object], Named], is_nonfinite: Callable[[Named], bool],
                 on_refused: Callable[[object, Named], None],
                 on_saved: Callable[[object, list], None],
                 stand_in: Callable[[], ContextManager[list]] = lambda: contextlib.nullcontext([])):
        self.state_of = state_of
        self.is_nonfinite = is_nonfinite
        self.on_refused = on_refused
        self.on_saved = on_saved
        self.stand_in = stand_in

    def install(self, hooks, patches: InstancePatches) -> int:
        """Guard the ``CheckpointHook`` instances among ``hooks``; returns how many."""
        guarded = 0
        for hook in hooks:
            if not isinstance(hook, CheckpointHook):
                continue
            for method in self.SAVE_METHODS:
                if callable(getattr(hook, method, None)):
                    patches.replace(hook, method,
                                    lambda original, m=method, h=hook: self._guarded(m, h,
                                                                                     original))
            guarded += 1
        return guarded

    def _guarded(self, method: str, hook: CheckpointHook, original):
        def save(runner, *args, **kwargs):
            if method == '_save_best_checkpoint' and not would_save_best(hook, runner, *args):
                return original(runner, *args, **kwargs)  # it writes nothing: nothing to check
            named = self.state_of(runner)
            if not self.is_nonfinite(named):
                return self._save(method, original, runner, [], *args, **kwargs)
            with self.stand_in() as replaced:
                # the verdict is agreed across ranks, so every rank calls it
                if not self.is_nonfinite(self.state_of(runner)):
                    return self._save(method, original, runner, replaced, *args, **kwargs)
            self.on_refused(runner, named)
            return None
        return save

    def _save(self, method, original, runner, replaced, *args, **kwargs):
        result = original(runner, *args, **kwargs)
        if method == '_save_checkpoint':
            self.on_saved(runner, replaced)
        return result


def would_save_best(hook: CheckpointHook, runner, metrics=None, *args, **kwargs) -> bool:
    """Whether ``CheckpointHook._save_best_checkpoint(runner, metrics)`` is about to write a
    checkpoint (mmengine 0.10's rule: ``save_best`` set and some key indicator better than its
    best score in the MessageHub). True where that cannot be told (``'auto'`` before the first
    validation, another mmengine): a needless check is safe, a missing one is not."""
    if not getattr(hook, 'save_best', None):
        return False
    try:
        indicators = hook.key_indicators
        if 'auto' in indicators:
            return True
        for key, rule in zip(indicators, hook.rules):
            score = (metrics or {}).get(key)
            best_key = 'best_score' if len(indicators) == 1 else f'best_score_{key}'
            best = runner.message_hub.get_info(best_key, hook.init_value_map[rule])
            if score is not None and hook.is_better_than[key](score, best):
                return True
        return False
    except (AttributeError, KeyError, TypeError):
        return True


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


def save_last_good_state(runner, rank: int, iter: int) -> str:
    """Save the runner's (finite) state as ``last_good_iter_{iter}.pth`` and point
    ``last_checkpoint`` at it, so that ``resume=True`` continues from the last good state."""
    filename = f'last_good_iter_{iter}.pth'
    runner.save_checkpoint(runner.work_dir, filename, by_epoch=False)
    saved = osp.join(runner.work_dir, filename)
    if rank == 0:
        with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
            f.write(saved)
    return saved
