"""Instance-level method replacement, the means to end an epoch early, and what to patch.

MMEngine has no hook stage between ``backward`` and ``optimizer.step`` (``update_params`` does
backward, clip, step and zero_grad inside the model's ``train_step``). The hook therefore
replaces ``step``/``update_params`` on the optim wrapper *instances* of the runner. An instance
attribute shadows the class method, so only this runner's wrappers are affected, gradient
accumulation and ``clip_grad`` keep working (the original ``step`` still does both), and
everything is undone after training.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import torch
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict

__all__ = ['InstancePatches', 'StopTrainingNow', 'interruptible', 'make_epoch_interruptible',
           'end_training_now', 'epoch_running', 'skip_batches_on_resume', 'unwrap_model',
           'optim_wrappers', 'eager_only', 'no_validation_after_stop']

_MISSING = object()


class InstancePatches:
    """Replace bound methods on individual objects and undo all replacements at once."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def replace(self, obj: Any, name: str, make: Callable[[Callable], Callable]) -> None:
        """``obj.name = make(original)``, where ``original`` is the currently bound method."""
        original = getattr(obj, name)
        previous = vars(obj).get(name, _MISSING)
        # Keep the original's attributes: e.g. MMEngine's parameter schedulers mark the
        # wrapper's ``step`` with ``_with_counter`` and warn ("optimizer.step() has been
        # overridden") when the mark is missing.
        setattr(obj, name, functools.update_wrapper(make(original), original))
        self._undo.append((obj, name, previous))

    def undo_all(self) -> None:
        for obj, name, previous in reversed(self._undo):
            if previous is _MISSING:
                vars(obj).pop(name, None)
            else:
                setattr(obj, name, previous)
        self._undo.clear()

    def __len__(self) -> int:
        return len(self._undo)


class StopTrainingNow(Exception):
    """Ends the current epoch of an epoch-based loop at once (caught by the patched
    ``run_epoch``). Only raised where that patch is installed."""


def interruptible(run_epoch: Callable, loop: Any) -> Callable:
    """``run_epoch`` of ``loop``, ended early (and ``stop_training`` set) by
    :class:`StopTrainingNow`. The one implementation of "stop now" for every loop here."""

    @functools.wraps(run_epoch)
    def run_epoch_interruptible(*args, **kwargs):
        run_epoch_interruptible.running = True
        try:
            return run_epoch(*args, **kwargs)
        except StopTrainingNow:
            loop.stop_training = True
        finally:
            run_epoch_interruptible.running = False
    run_epoch_interruptible.running = False
    return run_epoch_interruptible


def epoch_running(loop: Any) -> bool:
    """Whether ``loop`` is inside an epoch that :class:`StopTrainingNow` can end (so raising
    it is caught), e.g. a checkpoint refused in ``after_train_iter`` but not in
    ``after_val_epoch``."""
    return bool(getattr(getattr(loop, 'run_epoch', None), 'running', False))


def skip_batches_on_resume(loop: Any, epoch: int, batches: int, patches: InstancePatches,
                           log: Callable[[str, int], None]) -> bool:
    """After a stop in the middle of an epoch, let the resumed epoch-based ``loop`` continue
    past the batches of ``epoch`` that were already consumed (the offending one included):
    MMEngine restarts an epoch from its first batch, which would train those batches twice and
    stop on the same bad batch again, every time. The sampler's order depends on the seed and
    the epoch only, so the resumed epoch sees the same batches; the skipped ones are still
    loaded (not trained). Returns whether the skip was installed."""
    if not callable(getattr(loop, 'run_iter', None)) or getattr(loop, 'epoch', None) != epoch:
        return False

    def make(original):
        def run_iter(idx, data_batch, *args, **kwargs):
            if loop.epoch == epoch and idx < batches:
                return None
            return original(idx, data_batch, *args, **kwargs)
        return run_iter
    patches.replace(loop, 'run_iter', make)
    log(f'resuming epoch {epoch + 1} after its first {batches} batch(es): they were consumed '
        f'before the stop (the last of them is the offending batch, whose update was not '
        'applied), so they are skipped, not trained again', logging.WARNING)
    return True


def make_epoch_interruptible(loop: Any, patches: InstancePatches) -> bool:
    """Let :class:`StopTrainingNow` end ``loop``'s current epoch.

    ``EpochBasedTrainLoop`` only looks at ``stop_training`` between epochs, so a stop decided
    at iteration 10 of a 7000-iteration COCO epoch would otherwise train (frozen) to its end.
    The remaining hooks of the interrupted iteration and ``after_train_epoch`` are skipped (no
    misleading ``epoch_N.pth`` for a partial epoch); ``after_train`` still runs.
    Returns False for loops without ``run_epoch`` (``IterBasedTrainLoop`` checks
    ``stop_training`` after every iteration, so it needs no patch).
    """
    if not callable(getattr(loop, 'run_epoch', None)):
        return False
    patches.replace(loop, 'run_epoch', lambda original: interruptible(original, loop))
    return True


def end_training_now(loop: Any, interruptible: bool, log: Callable[[str, int], None]) -> None:
    """Set ``loop.stop_training`` and, where :func:`make_epoch_interruptible` patched the loop,
    end the current epoch at once."""
    if not hasattr(loop, 'stop_training'):
        log(f'{type(loop).__name__} has no `stop_training`; it may keep iterating, but no '
            'further update will be applied', logging.WARNING)
    loop.stop_training = True
    if interruptible:
        raise StopTrainingNow()


def eager_only(fn: Callable) -> Callable:
    """``fn``, run eagerly where it is called from code that ``torch.compile`` traces.

    MMEngine's ``compile=True`` compiles ``train_step``, which calls the wrapper's
    ``update_params`` and ``step``: traced, the audit's host sync becomes a graph break and
    the Python state it builds (the event draft) is replayed in part. Every backend traces
    (``eager`` and ``aot_eager`` too), so the audit is excluded from tracing: it runs as in
    eager mode, between two compiled pieces of ``train_step``."""
    disable = getattr(getattr(torch, 'compiler', None), 'disable', None)
    return disable(fn) if callable(disable) else fn


def no_validation_after_stop(runner, patches: InstancePatches, stopped: Callable[[], bool],
                             log: Callable[[str, int], None]) -> bool:
    """Once ``stopped()``, the train loop's validation does not run: after a refused
    checkpoint the model holds NaN/Inf (its metrics are not a result), and after a stop
    inside an epoch MMEngine would log them under the previous epoch's number. Returns
    whether the validation loop was patched."""
    val_loop = getattr(runner, 'val_loop', None)
    if not callable(getattr(val_loop, 'run', None)):
        return False

    def make(original):
        def run(*args, **kwargs):
            if stopped():
                log('training was stopped, so the validation that follows is not run; '
                    'validate the last good checkpoint instead', logging.WARNING)
                return None
            return original(*args, **kwargs)
        return run
    patches.replace(val_loop, 'run', make)
    return True


def unwrap_model(runner) -> Any:
    """The runner's model without its DDP/FSDP wrapper."""
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def optim_wrappers(runner) -> list[tuple[str, Any]]:
    """``(name, OptimWrapper)`` for each wrapper of the runner (one unnamed, or each of an
    ``OptimWrapperDict``)."""
    wrapper = runner.optim_wrapper
    if isinstance(wrapper, OptimWrapperDict):
        return list(wrapper.items())
    return [('', wrapper)] if isinstance(wrapper, OptimWrapper) else []
