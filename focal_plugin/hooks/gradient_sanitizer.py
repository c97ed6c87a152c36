"""GradientSanitizerHook: audit gradients between backward and ``optimizer.step``.

Added to an existing pipeline with nothing but::

    custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)
    custom_hooks = [dict(type='GradientSanitizerHook', policy='skip')]

MMEngine has no hook stage between backward and step, so ``before_train`` replaces ``step`` (and
``update_params``, to see the loss) on the runner's optim wrapper *instances*. ``update_params``
calls ``step`` only when an update is due: the audit sees the accumulated gradients, before
``clip_grad`` and AMP unscaling, and decides whether the original ``step`` runs at all. A finite
audit costs one fused norm pass and one host sync; explaining an event costs more, only then.
The parts: the rule (:mod:`.policy`), events (:mod:`.events`), reporting (:mod:`.reporter`), the
checkpoint guard (:mod:`.checkpoint_guard`); this file connects them to MMEngine's stages.
"""
from __future__ import annotations

import logging
from typing import Any

from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from torch import Tensor

from focal_plugin.registry import register_hook

from .checkpoint_guard import CheckpointGuard, check_checkpoint, save_last_good_state
from .consensus import agree_any_flags, agreed_nonfinite, rank_and_world
from .events import (
    UpdateWindow,
    finalize,
    float_state,
    named_gradients,
    state_draft,
    update_draft,
)
from .finite_check import any_nonfinite, floating_tensors, zero_nonfinite_
from .interception import (
    InstancePatches,
    eager_only,
    end_training_now,
    epoch_running,
    make_epoch_interruptible,
    no_validation_after_stop,
    optim_wrappers,
    skip_batches_on_resume,
    unwrap_model,
)
from .localize import localize_window
from .log_window import CONTAINED_ACTIONS, forget_nonfinite_scalars
from .model_state import ModelState
from .options import SanitizerOptions
from .policy import Action, EventKind, Policy, RunStatus, SanitizerPolicy
from .report import JsonReport, format_counters
from .reporter import Reporter, open_report

__all__ = ['GradientSanitizerHook']

CHECKPOINT_KEY = 'gradient_sanitizer'
_MAX_CAPTURED_LOSSES = 1024


@register_hook
class GradientSanitizerHook(Hook):
    """Detect, explain and contain NaN/Inf in training, before they reach the weights.

    Args:
        policy: what to do with an update whose gradients (or loss) are non-finite:
            ``'warn'`` log and apply it anyway; ``'skip'`` drop it (no optimizer step, no
            momentum change, BatchNorm statistics restored); ``'sanitize'`` set the NaN/Inf
            gradient entries to 0 and apply it; ``'stop'`` end training gracefully after a
            report and a checkpoint of the last good state; ``'raise'`` raise
            :class:`NonFiniteTrainingError` (the update is not applied).
        interval: audit every ``interval`` training iterations (the audit happens at the first
            optimizer update at or after a due iteration, so accumulation windows are audited
            whole).
        max_consecutive: consecutive skipped/sanitized updates tolerated before escalating to
            ``escalate_to``; ``None`` never escalates.
        escalate_to: ``'stop'`` or ``'raise'``.
        check_loss: include the loss passed to ``update_params`` in the verdict (a NaN loss
            with finite gradients, e.g. from a detached term, is an event too).
        check_params: after each audited update, also check all parameters and buffers (one
            more fused pass). Catches corruption that did not come through the gradients.
        localize: on the first event, replay the offending batch(es) with module hooks and
            name the first module whose output or output gradient is non-finite.
        max_consecutive_overflow: with an enabled AMP ``GradScaler``, non-finite gradients with
            a finite loss are a normal overflow (the scaler skips the step and lowers the scale)
            and are only counted as ``amp_overflow``; more than this many in a row are treated
            as divergence and go through ``policy``. ``None``: never.
        protect_checkpoints: refuse any checkpoint whose parameters/buffers are non-finite.
        report_file: JSON report name, relative to ``work_dir`` (``None``: no file).
        max_reported_events: events kept in full in the report (later ones are counted).
        max_listed: tensors/samples listed per rank in the log summary.
    """

    priority = 'ABOVE_NORMAL'  # before EMAHook, LoggerHook and CheckpointHook

    def __init__(self, policy: str = 'skip', interval: int = 1,
                 max_consecutive: int | None = 10, escalate_to: str = 'stop',
                 check_loss: bool = True, check_params: bool = False, localize: bool = False,
                 max_consecutive_overflow: int | None = 16, protect_checkpoints: bool = True,
                 report_file: str | None = 'gradient_sanitizer_report.json',
                 max_reported_events: int = 20, max_listed: int = 10):
        self.options = opts = SanitizerOptions(
            policy=policy, interval=interval, max_consecutive=max_consecutive,
            escalate_to=escalate_to, check_loss=check_loss, check_params=check_params,
            localize=localize, max_consecutive_overflow=max_consecutive_overflow,
            protect_checkpoints=protect_checkpoints, report_file=report_file,
            max_reported_events=max_reported_events, max_listed=max_listed)
        self.rule = SanitizerPolicy(opts.policy, opts.max_consecutive, opts.escalate_to,
                                    opts.max_consecutive_overflow)
        self.last_good_checkpoint: str | None = None
        self._localized = False
        self._resumed_state: dict | None = None
        self._patches = InstancePatches()
        self._reset_run_state()

    @property
    def policy(self) -> str:
        return self.rule.policy.value

    @property
    def counters(self) -> dict:
        return self.rule.counters

    @property
    def stopped(self) -> bool:
        """A stop was decided (``policy='stop'``, an escalation, a refused checkpoint)."""
        return self.rule.stop_decided

    @property
    def first_event(self) -> dict | None:
        """The first event of this run (or of the run it resumed), as in the report."""
        return self._reporter.report.data['first_event']

    def _reset_run_state(self) -> None:
        self._runner = None
        self._rank, self._world_size = 0, 1
        self._at = (0, 1)  # (iter, epoch), 1-based, of the iteration that started last
        self._epoch_iterating = False  # inside an epoch's iterations (not its end hooks)
        self._wrapper_names: list[str] = []
        self._state: ModelState | None = None
        self._interruptible = False
        self._reporter = Reporter(JsonReport('', {}, 1, 1, enabled=False))
        self._window = UpdateWindow()  # the iterations since the last optimizer update
        self._losses: dict[str, list[Tensor]] = {}
        self._audit_due: set[str] = set()  # wrappers whose next step is audited
        self._audit_iteration = False  # every step of this iteration is audited
        self._stepped = self._audited = False  # this iteration
        self._drafts: list[dict] = []
        self._resume_at: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        """What survives in checkpoints (and comes back on resume)."""
        return dict(version=1, **self.rule.state_dict(),
                    last_good_checkpoint=self.last_good_checkpoint, localized=self._localized,
                    resume_at=self._resume_at)

    def load_state_dict(self, state: dict) -> None:
        self.rule.load_state_dict(state)
        self.last_good_checkpoint = state.get('last_good_checkpoint')
        self._localized = bool(state.get('localized', False))
        self._resume_at = state.get('resume_at')  # (epoch, batches) of a stop mid-epoch

    # ------------------------------------------------------------------ stages
    def before_train(self, runner) -> None:
        self._patches.undo_all()
        if self._state is not None:
            self._state.close()
        self._reset_run_state()
        self._runner = runner
        self._rank, self._world_size = rank_and_world()
        resumed = self._resumed_state is not None and runner.iter > 0
        if resumed:
            self.load_state_dict(self._resumed_state)
        self._resumed_state = None
        self._at = (runner.iter, runner.epoch + 1)
        self._state = ModelState(unwrap_model(runner),
                                 keep_copies=self.rule.policy is not Policy.WARN)
        wrappers = optim_wrappers(runner)
        for name, wrapper in wrappers:  # eager even inside a compiled train_step
            self._patches.replace(wrapper, 'step', lambda original, n=name, w=wrapper:
                                  eager_only(self._audited_step(n, w, original)))
            self._patches.replace(wrapper, 'update_params', lambda original, n=name:
                                  eager_only(self._loss_capturing(n, original)))
        self._wrapper_names = [name for name, _ in wrappers]
        self._interruptible = make_epoch_interruptible(runner.train_loop, self._patches)
        if self.options.protect_checkpoints:
            guard = CheckpointGuard(lambda r: self._state.tensors(), agreed_nonfinite,
                                    self._refuse_checkpoint, self._checkpoint_saved,
                                    lambda: self._state.without_open_update(bool(self._window)))
            guard.install(runner.hooks, self._patches)
        self._reporter = open_report(runner.work_dir, self.options, self._rank,
                                     self._world_size, resumed)
        no_validation_after_stop(runner, self._patches, lambda: self.rule.stop_decided,
                                 self._reporter.log)
        if self._resume_at and self._interruptible:
            skip_batches_on_resume(runner.train_loop, *self._resume_at, self._patches,
                                   self._reporter.log)
        self._resume_at = None
        if not wrappers:
            self._reporter.log('no OptimWrapper found on the runner: gradients will NOT be '
                               'audited', logging.WARNING)
            return
        n_params = sum(len(g['params']) for _, w in wrappers for g in w.optimizer.param_groups)
        self._reporter.log(
            f'auditing {n_params} parameter tensor(s) of {len(wrappers)} optim wrapper(s) '
            f'before clip_grad/step; {self.options.as_config()}'
            + (f'; resumed counters: {format_counters(self.counters)}' if resumed else ''))

    def before_train_epoch(self, runner) -> None:
        self._epoch_iterating = True

    def after_train_epoch(self, runner) -> None:
        self._epoch_iterating = False  # a stop decided from now on completes this epoch

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._stepped = self._audited = False
        self._at = (runner.iter + 1, runner.epoch + 1)
        if not self._window:
            self._state.buffers.take()  # state before this update's first forward pass
        # Due: every step of an audit iteration (a wrapper may step several times in one:
        # k discriminator updates, a batch in chunks), and a wrapper's first step after one
        # (an accumulation window that ends later).
        self._audit_iteration = self.every_n_train_iters(runner, self.options.interval)
        if self._audit_iteration:
            self._audit_due.update(self._wrapper_names)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        self._window.append(runner.iter, data_batch, outputs)
        had_event = bool(self._drafts)
        if any(d.get('action') in CONTAINED_ACTIONS for d in self._drafts):  # .log_window
            forget_nonfinite_scalars(runner.message_hub, len(self._window.records))
        self._publish()
        if self.options.check_params and self._audited and self.rule.pending is None:
            had_event = self._check_parameters() or had_event
        if self._audited:
            self.rule.end_of_audited_update(had_event)
        self._reporter.push_counters(runner.message_hub, self.counters)
        if self._stepped:
            self._window.clear()
        self._reporter.flush(self.counters, self.last_good_checkpoint)
        pending = self.rule.take_pending()
        if pending is Action.RAISED:
            self._raise()
        elif pending is Action.STOPPED:
            self._stop(runner, batch_idx)

    def after_train(self, runner) -> None:
        status = RunStatus.STOPPED if self.rule.stop_decided else RunStatus.FINISHED
        self._write_report(status=status.value)
        path = self._reporter.path
        self._reporter.log(f'training {status.value}; totals: {format_counters(self.counters)}'
                           + (f'; report: {path}' if path else ''))
        self._patches.undo_all()
        self._state.close()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """The hook's counters enter the checkpoint; saves that bypass CheckpointHook are
        checked here (see :mod:`.checkpoint_guard`)."""
        checkpoint[CHECKPOINT_KEY] = self.state_dict()
        if self.options.protect_checkpoints:
            check_checkpoint(checkpoint, self._at[0], self.last_good_checkpoint,
                             self.options.max_listed,
                             self._state.inf_allowed if self._state else frozenset())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Applied in before_train, and only when resuming (runner.iter > 0 then): counters
        # of a run whose weights are merely loaded with `load_from` do not carry over.
        self._resumed_state = checkpoint.get(CHECKPOINT_KEY)

    # ---------------------------------------------------------- the audited step
    def _loss_capturing(self, name: str, original):
        def update_params(loss, *args, **kwargs):
            if self.options.check_loss and isinstance(loss, Tensor):
                captured = self._losses.setdefault(name, [])
                if len(captured) < _MAX_CAPTURED_LOSSES:
                    captured.append(loss.detach())
            return original(loss, *args, **kwargs)
        return update_params

    def _audited_step(self, name: str, wrapper: OptimWrapper, original):
        def step(*args, **kwargs):
            self._stepped = True
            losses = self._losses.pop(name, [])
            if self.rule.stop_decided or self.rule.pending is not None:
                return None  # a stop or raise was decided earlier in this iteration
            if name not in self._audit_due and not self._audit_iteration:
                return original(*args, **kwargs)
            self._audit_due.discard(name)
            self._audited = True
            params = [p for group in wrapper.optimizer.param_groups for p in group['params']
                      if p.grad is not None]
            grads = floating_tensors(p.grad for p in params)
            # the buffers this update's forward passes changed, checked in the same pass
            buffers = self._state.changeable_buffers()
            # the one host sync of a normal audit (one tiny all-reduce with several ranks)
            grads_bad, loss_bad, buffers_bad = agree_any_flags(any_nonfinite(
                [grads, losses, floating_tensors(b for _, b in buffers)]))
            if grads_bad or loss_bad:
                apply = self._on_nonfinite(name, wrapper, params, losses, grads_bad, loss_bad)
                if apply is None and buffers_bad:  # an overflow the GradScaler handles
                    self._on_nonfinite_buffers(name, buffers)
                return original(*args, **kwargs) if apply is not False else None
            if buffers_bad:
                self._on_nonfinite_buffers(name, buffers)
            return original(*args, **kwargs)
        return step

    def _on_nonfinite_buffers(self, name: str, buffers: list[tuple[str, Tensor]]) -> None:
        """Finite gradients and loss, non-finite buffers: no gradient explains them (a finite
        but huge input sent BatchNorm's variance to inf). The snapshot of before this update's
        forward passes is put back and the (finite) update is applied."""
        action = self.rule.on_nonfinite_buffers()
        draft = state_draft(EventKind.BUFFER, float_state(dict(buffers)), action, *self._at,
                            self.last_good_checkpoint)
        draft['optim_wrapper'] = name
        if action is Action.RESTORED:  # as for a skipped update: the window's statistics go
            draft['restored_buffers'] = self._state.buffers.restore(
                only_nonfinite=len(self._wrapper_names) > 1)
        self._drafts.append(draft)

    def _on_nonfinite(self, name, wrapper, params, losses, grads_bad, loss_bad) -> bool | None:
        """Carry out the policy's decision; returns whether the update is applied (None: an
        AMP overflow, left to the GradScaler's step)."""
        scaler = getattr(wrapper, 'loss_scaler', None)
        scaler = scaler if scaler is not None and scaler.is_enabled() else None
        decision = self.rule.on_nonfinite_update(grads_bad, loss_bad, scaler is not None)
        if decision.action is None:  # the GradScaler skips it and lowers the scale
            self._reporter.overflow(dict(
                iter=self._at[0], epoch=self._at[1], optim_wrapper=name,
                loss_scale=float(scaler.get_scale()), consecutive=self.rule.consecutive_overflow),
                self.counters, self.rule.max_consecutive_overflow)
            return None
        named_grads = named_gradients(params, self._state.parameter_names(), name)
        kind = EventKind.GRADIENT if grads_bad else EventKind.LOSS
        draft = update_draft(kind, name, named_grads, losses,
                             float(scaler.get_scale()) if scaler is not None else None,
                             *self._at)
        draft.update(reason=decision.reason, action=decision.action.value,
                     escalated=decision.escalated)
        self._drafts.append(draft)
        if decision.action is Action.SANITIZED:
            draft['sanitized_entries'] = zero_nonfinite_([g for _, g in named_grads])
        if decision.action is not Action.WARNED:
            # a dropped update with one wrapper restores every buffer of the model
            only_nonfinite = (decision.action is Action.SANITIZED
                              or len(self._wrapper_names) > 1)
            draft['restored_buffers'] = self._state.buffers.restore(only_nonfinite)
        return decision.action in (Action.WARNED, Action.SANITIZED)

    # ---------------------------------------------------------------- reporting
    def _publish(self) -> None:
        """Finalize this iteration's drafts (one collective), report and log them."""
        if not self._drafts:
            return
        about_update = any(EventKind(d['kind']).concerns_update for d in self._drafts)
        extra: dict = dict(loss_terms=self._window.nonfinite_loss_terms()) if about_update else {}
        extra['batch'] = self._window.metainfo()
        if about_update and self.options.localize and not self._localized:
            extra['localization'] = localize_window(unwrap_model(self._runner),
                                                    self._runner.optim_wrapper,
                                                    self._window.records)
            self._localized = True
        events, self._drafts = finalize(self._drafts, extra, self.counters), []
        self._reporter.publish(events, self.counters)

    def _write_report(self, **fields) -> None:
        self._reporter.write(self.counters, self.last_good_checkpoint, **fields)

    # ------------------------------------------------------ the model's own state
    def _check_parameters(self) -> bool:
        state = self._state.tensors()
        if not agreed_nonfinite(state):
            return False
        action = self.rule.on_corrupt_state()
        self._drafts.append(state_draft(EventKind.PARAMETER, state, action, *self._at,
                                        self.last_good_checkpoint))
        self._publish()
        return True

    def _checkpoint_saved(self, runner, replaced: list) -> None:
        self.last_good_checkpoint = runner.message_hub.get_info('last_ckpt',
                                                                self.last_good_checkpoint)
        if replaced:
            self._reporter.saved_without_open_update(
                self.last_good_checkpoint, self._window.records[0]['iter'] + 1, self._at[0],
                replaced)

    def _refuse_checkpoint(self, runner, named: list[tuple[str, Tensor]]) -> None:
        follow_up = self.rule.on_refused_checkpoint()
        self._drafts.append(state_draft(EventKind.CHECKPOINT, named, follow_up, *self._at,
                                        self.last_good_checkpoint))
        self._publish()
        self._reporter.push_counters(runner.message_hub, self.counters)
        self._write_report()
        if follow_up is Action.RAISED:
            self._raise()
        if follow_up is Action.STOPPED:
            self._write_report(status=RunStatus.STOPPED.value)
            # at once inside an epoch's iterations (a save in after_train_iter); at the end of
            # an epoch (after_train_epoch) the epoch completes, and outside run_epoch
            # (after_val_epoch) setting the flag is all there is to do
            end_training_now(runner.train_loop,
                             self._interruptible and self._epoch_iterating
                             and epoch_running(runner.train_loop), self._reporter.log)

    # ------------------------------------------------------------ terminal actions
    def _raise(self) -> None:
        self._write_report(status=RunStatus.RAISED.value)
        raise self._reporter.error(self.counters, self.policy)

    def _stop(self, runner, batch_idx: int) -> None:
        log, at = self._reporter.log, f'stopping training at iter {self._at[0]}'
        if self._interruptible:  # a resume continues after this batch, not at epoch start
            self._resume_at = (runner.epoch, batch_idx + 1)
        # Dropped updates keep the weights good, but NaN can also get in without an update
        # (a corrupt checkpoint, a buggy hook): check, once, before calling them good.
        if not agreed_nonfinite(self._state.tensors()):
            saved = self.last_good_checkpoint = save_last_good_state(runner, self._rank,
                                                                     self._at[0])
            log(f'{at}: the last good state (the offending update was not applied) is saved '
                f'to {saved}', logging.ERROR)
        else:
            log(f'{at}: the weights are already non-finite, so no checkpoint is written; last '
                f'good checkpoint: {self.last_good_checkpoint}', logging.ERROR)
        self._write_report(status=RunStatus.STOPPED.value)
        end_training_now(runner.train_loop, self._interruptible, log)
