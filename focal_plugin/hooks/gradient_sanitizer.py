"""GradientSanitizerHook: audit gradients between backward and ``optimizer.step``.

Added to an existing pipeline with nothing but::

    custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)
    custom_hooks = [dict(type='GradientSanitizerHook', policy='skip')]

How it gets between backward and step: in ``before_train`` it replaces ``step`` (and
``update_params``, to see the loss) on the runner's optim wrapper instances (each wrapper of an
``OptimWrapperDict``). ``update_params`` calls ``self.step()`` only when an update is due, so the
audit sees the fully accumulated gradients, before ``clip_grad`` and before ``AmpOptimWrapper``
unscales them, and it decides whether the original ``step`` runs at all.

Cost model: in the normal (finite) case one audit is one fused norm pass over the gradients, one
host sync (one tiny all-reduce of int flags in distributed runs) and no other work. Everything
that explains an event (names, counts, per-module norms, batch metainfo, replay) runs only
after a non-finite value was found.
"""
from __future__ import annotations

import logging
import os.path as osp
from typing import Any

import torch
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from torch import Tensor

from focal_plugin.registry import register_hook

from .batch_info import batch_metainfo
from .consensus import agree_any_flags, gather_from_ranks, rank_and_world
from .errors import NonFiniteCheckpointError, NonFiniteTrainingError
from .finite_check import (
    any_nonfinite,
    floating_tensors,
    json_number,
    nonfinite_counts,
    norms_by_prefix,
)
from .interception import InstancePatches, StopTrainingNow, make_epoch_interruptible
from .localize import localize_nonfinite
from .report import JsonReport, format_counters, format_event
from .state_snapshot import BufferSnapshot

__all__ = ['GradientSanitizerHook']

POLICIES = ('warn', 'skip', 'sanitize', 'stop', 'raise')
ESCALATIONS = ('stop', 'raise')
COUNTERS = ('events', 'skipped', 'sanitized', 'warned', 'amp_overflow', 'escalations',
            'refused_checkpoints')
# MessageHub keys; none matches LogProcessor's mean_pattern, so the logs show current values.
MESSAGE_HUB_KEYS = {
    'events': 'train/nonfinite_events',
    'skipped': 'train/nonfinite_skipped',
    'sanitized': 'train/nonfinite_sanitized',
    'warned': 'train/nonfinite_warned',
    'amp_overflow': 'train/amp_overflow',
    'refused_checkpoints': 'train/refused_checkpoints',
}
CHECKPOINT_KEY = 'gradient_sanitizer'
_ACTION_OF_POLICY = {'warn': 'warned', 'skip': 'skipped', 'sanitize': 'sanitized',
                     'stop': 'stopped', 'raise': 'raised'}
# Full multi-line summaries for the first few events, one line after that, then 1 in 100.
_FULL_SUMMARIES = 3
_LINE_SUMMARIES = 20


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int{" or None" if allow_none else ""}, '
                        f'got {value!r} ({type(value).__name__})')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}')


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be a bool, got {value!r} ({type(value).__name__})')


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')


def _module_of(param_name: str) -> str:
    return param_name.rpartition('.')[0] or '<model>'


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

    def __init__(self,
                 policy: str = 'skip',
                 interval: int = 1,
                 max_consecutive: int | None = 10,
                 escalate_to: str = 'stop',
                 check_loss: bool = True,
                 check_params: bool = False,
                 localize: bool = False,
                 max_consecutive_overflow: int | None = 16,
                 protect_checkpoints: bool = True,
                 report_file: str | None = 'gradient_sanitizer_report.json',
                 max_reported_events: int = 20,
                 max_listed: int = 10):
        _check_choice('policy', policy, POLICIES)
        _check_int('interval', interval, 1)
        _check_int('max_consecutive', max_consecutive, 1, allow_none=True)
        _check_choice('escalate_to', escalate_to, ESCALATIONS)
        for name, value in (('check_loss', check_loss), ('check_params', check_params),
                            ('localize', localize), ('protect_checkpoints', protect_checkpoints)):
            _check_bool(name, value)
        _check_int('max_consecutive_overflow', max_consecutive_overflow, 1, allow_none=True)
        if report_file is not None and (not isinstance(report_file, str) or not report_file):
            raise TypeError(f'report_file must be a non-empty str or None, got {report_file!r}')
        _check_int('max_reported_events', max_reported_events, 1)
        _check_int('max_listed', max_listed, 1)

        self.policy = policy
        self.interval = interval
        self.max_consecutive = max_consecutive
        self.escalate_to = escalate_to
        self.check_loss = check_loss
        self.check_params = check_params
        self.localize = localize
        self.max_consecutive_overflow = max_consecutive_overflow
        self.protect_checkpoints = protect_checkpoints
        self.report_file = report_file
        self.max_reported_events = max_reported_events
        self.max_listed = max_listed

        self.counters = dict.fromkeys(COUNTERS, 0)
        self.consecutive = 0  # consecutive audited updates with an event
        self.consecutive_overflow = 0
        self.last_good_checkpoint: str | None = None
        self._localized = False
        self._resumed_state: dict | None = None
        self._patches = InstancePatches()
        self._reset_run_state()

    # ------------------------------------------------------------------ state
    def _reset_run_state(self) -> None:
        self._runner = None
        self._rank, self._world_size = 0, 1
        self._param_names: dict[int, str] = {}
        self._state_tensors: list[tuple[str, Tensor]] = []
        self._wrapper_names: list[str] = []
        self._buffers: BufferSnapshot | None = None
        self._interruptible = False
        self._report: JsonReport | None = None
        self._report_dirty = False
        # accumulation window: the iterations since the last optimizer update
        self._window: list[dict] = []
        self._losses: dict[str, list[Tensor]] = {}
        self._audit_due: set[str] = set()
        # this iteration
        self._stepped = False
        self._audited = False
        self._overflowed = False
        self._drafts: list[dict] = []
        self._terminal: str | None = None
        self._terminal_event: dict | None = None
        self._frozen = False  # a stop was decided: apply no further update

    def state_dict(self) -> dict:
        """What survives in checkpoints (and comes back on resume)."""
        return dict(version=1, counters=dict(self.counters), consecutive=self.consecutive,
                    consecutive_overflow=self.consecutive_overflow,
                    last_good_checkpoint=self.last_good_checkpoint, localized=self._localized)

    def load_state_dict(self, state: dict) -> None:
        for key in COUNTERS:
            self.counters[key] = int(state.get('counters', {}).get(key, 0))
        self.consecutive = int(state.get('consecutive', 0))
        self.consecutive_overflow = int(state.get('consecutive_overflow', 0))
        self.last_good_checkpoint = state.get('last_good_checkpoint')
        self._localized = bool(state.get('localized', False))

    def _config(self) -> dict:
        return dict(policy=self.policy, interval=self.interval,
                    max_consecutive=self.max_consecutive, escalate_to=self.escalate_to,
                    check_loss=self.check_loss, check_params=self.check_params,
                    localize=self.localize,
                    max_consecutive_overflow=self.max_consecutive_overflow,
                    protect_checkpoints=self.protect_checkpoints)

    # ------------------------------------------------------------ installation
    @staticmethod
    def _model(runner) -> torch.nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    @staticmethod
    def _optim_wrappers(runner) -> list[tuple[str, OptimWrapper]]:
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, OptimWrapperDict):
            return list(wrapper.items())
        if isinstance(wrapper, OptimWrapper):
            return [('', wrapper)]
        return []

    def before_train(self, runner) -> None:
        self._patches.undo_all()
        self._reset_run_state()
        self._runner = runner
        self._rank, self._world_size = rank_and_world()
        resumed = self._resumed_state is not None and runner.iter > 0
        if resumed:
            self.load_state_dict(self._resumed_state)
        self._resumed_state = None

        model = self._model(runner)
        self._param_names = {id(p): name for name, p in model.named_parameters()}
        self._state_tensors = [(name, t) for name, t in model.state_dict(keep_vars=True).items()
                               if isinstance(t, Tensor) and t.is_floating_point()]
        if self.policy != 'warn':
            self._buffers = BufferSnapshot(model)

        wrappers = self._optim_wrappers(runner)
        for name, wrapper in wrappers:
            self._patches.replace(wrapper, 'step',
                                  lambda original, n=name, w=wrapper: self._audited_step(
                                      n, w, original))
            self._patches.replace(wrapper, 'update_params',
                                  lambda original, n=name: self._loss_capturing(n, original))
        self._wrapper_names = [name for name, _ in wrappers]
        self._interruptible = make_epoch_interruptible(runner.train_loop, self._patches)
        if self.protect_checkpoints:
            for hook in runner.hooks:
                if isinstance(hook, CheckpointHook):
                    self._guard_checkpoint_hook(hook)

        path = osp.join(runner.work_dir, self.report_file) if self.report_file else ''
        self._report = JsonReport(path, self._config(), self._world_size,
                                  self.max_reported_events,
                                  enabled=bool(path) and self._rank == 0)
        if resumed and path:
            self._report.load_events(path)
        n_params = sum(len(g['params']) for _, w in wrappers
                       for g in w.optimizer.param_groups)
        if not wrappers:
            self._log('no OptimWrapper found on the runner: gradients will NOT be audited',
                      logging.WARNING)
        else:
            self._log(f'auditing {n_params} parameter tensor(s) of {len(wrappers)} optim '
                      f'wrapper(s) before clip_grad/step; {self._config()}'
                      + (f'; resumed counters: {format_counters(self.counters)}'
                         if resumed else ''))

    def after_train(self, runner) -> None:
        status = 'stopped' if self._frozen else 'finished'
        self._write_report(status=status)
        self._log(f'training {status}; totals: {format_counters(self.counters)}'
                  + (f'; report: {self._report.path}' if self._report.enabled else ''))
        self._patches.undo_all()

    def _log(self, message: str, level: int = logging.INFO) -> None:
        if self._rank == 0:
            print_log(f'GradientSanitizerHook: {message}', logger='current', level=level)

    # ----------------------------------------------------------- interception
    def _loss_capturing(self, name: str, original):
        def update_params(loss, *args, **kwargs):
            if self.check_loss and isinstance(loss, Tensor):
                captured = self._losses.setdefault(name, [])
                if len(captured) < 1024:
                    captured.append(loss.detach())
            return original(loss, *args, **kwargs)
        return update_params

    def _audited_step(self, name: str, wrapper: OptimWrapper, original):
        def step(*args, **kwargs):
            self._stepped = True
            losses = self._losses.pop(name, [])
            if self._frozen:
                return None  # a stop was decided earlier in this iteration
            if name not in self._audit_due:
                return original(*args, **kwargs)
            self._audit_due.discard(name)
            self._audited = True
            params = [p for group in wrapper.optimizer.param_groups for p in group['params']
                      if p.grad is not None]
            grads_bad, loss_bad = self._agreed_verdict(params, losses)
            if not (grads_bad or loss_bad):
                return original(*args, **kwargs)
            return self._on_nonfinite_update(name, wrapper, params, losses, grads_bad,
                                             loss_bad, lambda: original(*args, **kwargs))
        return step

    def _agreed_verdict(self, params: list, losses: list[Tensor]) -> tuple[bool, bool]:
        """The fused check of an audit, agreed across ranks: (grads bad, loss bad)."""
        grads = floating_tensors(p.grad for p in params)
        local = any_nonfinite([grads, losses])  # the one host sync of a normal audit
        grads_bad, loss_bad = agree_any_flags(local)
        return grads_bad, loss_bad

    # --------------------------------------------------------------- decisions
    def _decide(self) -> tuple[str, str | None]:
        """Action for a divergent update, with the escalation reason if any."""
        if self.policy in ('skip', 'sanitize'):
            self.consecutive += 1
            if self.max_consecutive is not None and self.consecutive > self.max_consecutive:
                self.counters['escalations'] += 1
                return _ACTION_OF_POLICY[self.escalate_to], (
                    f'{self.consecutive} consecutive non-finite updates exceed '
                    f'max_consecutive={self.max_consecutive}: escalating to '
                    f"'{self.escalate_to}'")
        return _ACTION_OF_POLICY[self.policy], None

    def _on_nonfinite_update(self, name, wrapper, params, losses, grads_bad, loss_bad,
                             apply_update):
        scaler = getattr(wrapper, 'loss_scaler', None)
        scaler_on = scaler is not None and scaler.is_enabled()
        reason = None
        if scaler_on and grads_bad and not loss_bad:
            self.consecutive_overflow += 1
            self._overflowed = True
            limit = self.max_consecutive_overflow
            if limit is None or self.consecutive_overflow <= limit:
                self._record_overflow(name, scaler)
                # GradScaler finds the same Inf/NaN, skips optimizer.step, lowers the scale.
                return apply_update()
            reason = (f'AMP overflow in {self.consecutive_overflow} consecutive audited updates '
                      f'(max_consecutive_overflow={limit}): the GradScaler is not recovering, '
                      'treated as divergence')
        action, escalation = self._decide()
        draft = self._describe_update(name, params, losses, 'gradient' if grads_bad else 'loss',
                                      scaler if scaler_on else None)
        draft['reason'] = '; '.join(r for r in (reason, escalation) if r) or None
        draft['action'] = action
        single_wrapper = len(self._wrapper_names) == 1
        result = None
        if action == 'warned':
            result = apply_update()
        elif action == 'sanitized':
            draft['sanitized_entries'] = self._sanitize(params)
            if self._buffers is not None:
                draft['restored_buffers'] = self._buffers.restore(only_nonfinite=True)
            result = apply_update()
        else:  # skipped / stopped / raised: the update is dropped entirely
            if self._buffers is not None:
                draft['restored_buffers'] = self._buffers.restore(
                    only_nonfinite=not single_wrapper)
            if action in ('stopped', 'raised'):
                self._terminal = action
                self._frozen = action == 'stopped'
        self._count(action)
        self._drafts.append(draft)
        return result

    def _count(self, action: str) -> None:
        self.counters['events'] += 1
        if action in ('skipped', 'sanitized', 'warned'):
            self.counters[action] += 1

    @staticmethod
    def _sanitize(params: list) -> int:
        """Replace NaN/Inf gradient entries by 0 in place; returns how many were replaced."""
        replaced = []
        for p in params:
            grad = p.grad
            if grad.is_sparse:
                p.grad = grad = grad.coalesce()
                grad = grad._values()
            if not grad.is_floating_point():
                continue
            replaced.append((~torch.isfinite(grad)).sum())
            torch.nan_to_num_(grad, nan=0.0, posinf=0.0, neginf=0.0)
        return int(torch.stack(replaced).sum()) if replaced else 0

    def _record_overflow(self, name: str, scaler) -> None:
        self.counters['amp_overflow'] += 1
        record = dict(iter=self._runner.iter + 1, epoch=self._runner.epoch + 1,
                      optim_wrapper=name, loss_scale=float(scaler.get_scale()),
                      consecutive=self.consecutive_overflow)
        self._report.add_overflow(record)
        self._report_dirty = True
        n = self.counters['amp_overflow']
        if n <= _LINE_SUMMARIES or n % 100 == 0:
            self._log(f"AMP overflow at iter {record['iter']} (loss scale "
                      f"{record['loss_scale']:g}): the GradScaler skips this update and lowers "
                      f'the scale; not counted as divergence ({self.consecutive_overflow} in a '
                      f'row, limit {self.max_consecutive_overflow}; {n} in total)')

    # -------------------------------------------------------------- diagnostics
    def _param_name(self, param: Tensor, wrapper_name: str, index: int) -> str:
        name = self._param_names.get(id(param))
        if name is None:
            return f'<{wrapper_name or "optim_wrapper"} param #{index}>'
        return name

    def _describe_update(self, name: str, params: list, losses: list[Tensor], kind: str,
                         scaler) -> dict:
        """This rank's explanation of a non-finite update (diagnostic path, may sync)."""
        names, grads = [], []
        for index, p in enumerate(params):
            grad = p.grad.coalesce()._values() if p.grad.is_sparse else p.grad
            if grad.is_floating_point():
                names.append(self._param_name(p, name, index))
                grads.append(grad)
        tensors = self._nonfinite_tensor_list(names, grads)
        norms = norms_by_prefix(names, grads)
        loss_scale = float(scaler.get_scale()) if scaler is not None else None
        if loss_scale:  # report unscaled norms
            for info in norms.values():
                for key in ('norm', 'finite_norm'):
                    if isinstance(info[key], float):
                        info[key] /= loss_scale
        local = dict(nonfinite_tensors=tensors, grad_norm_per_module=norms,
                     loss_values=[json_number(float(v.float().mean())) for v in losses])
        return dict(kind=kind, optim_wrapper=name, iter=self._runner.iter + 1,
                    epoch=self._runner.epoch + 1, loss_scale=loss_scale, local=local)

    def _nonfinite_tensor_list(self, names: list[str], tensors: list[Tensor]) -> list[dict]:
        listed = []
        for name, tensor, (nan, posinf, neginf) in zip(names, tensors,
                                                       nonfinite_counts(tensors)):
            if nan or posinf or neginf:
                listed.append(dict(name=name, module=_module_of(name), nan=nan, posinf=posinf,
                                   neginf=neginf, numel=tensor.numel()))
        return listed

    def _nonfinite_loss_terms(self) -> dict:
        """Loss terms (keys containing 'loss', as in ``parse_losses``) that were non-finite in
        the step outputs of the current accumulation window."""
        found = {}
        multi = len(self._window) > 1
        for record in self._window:
            outputs = record.get('outputs')
            if not isinstance(outputs, dict):
                continue
            items = [(k, v) for k, v in outputs.items()
                     if 'loss' in k and isinstance(v, Tensor) and v.is_floating_point()]
            if not items:
                continue
            values = torch.stack([v.detach().float().mean().cpu() for _, v in items]).tolist()
            for (key, _), value in zip(items, values):
                if value != value or abs(value) == float('inf'):
                    found[f"{key}@iter{record['iter'] + 1}" if multi else key] = \
                        json_number(value)
        if len(found) > 1:  # the total 'loss' adds nothing when the culprit terms are named
            found = {k: v for k, v in found.items() if k.split('@')[0] != 'loss'}
        return found

    def _window_metainfo(self) -> list[dict]:
        samples = []
        multi = len(self._window) > 1
        for record in self._window:
            for sample in batch_metainfo(record.get('data_batch')):
                samples.append(dict(sample, iter=record['iter'] + 1) if multi else sample)
        return samples[:64]

    def _localize(self) -> dict:
        runner = self._runner
        model = self._model(runner)
        wrapper = runner.optim_wrapper
        results = []
        # Every rank replays every batch of the window (no early exit), so SyncBN-style
        # collectives inside the forward stay in lockstep across ranks.
        for record in self._window:
            context = (wrapper.optim_context(model)
                       if not isinstance(wrapper, OptimWrapperDict) else None)
            result = localize_nonfinite(model, record.get('data_batch'), context)
            result['iter'] = record['iter'] + 1
            results.append(result)
        found = [r for r in results if r.get('forward') or r.get('backward')]
        return (found or results)[0] if results else {}

    def _finalize_drafts(self) -> list[dict]:
        """Turn this rank's drafts into events with every rank's details (one collective)."""
        want_localization = (self.localize and not self._localized
                             and any(d['kind'] in ('gradient', 'loss') for d in self._drafts))
        extra: dict = {}
        if any(d['kind'] in ('gradient', 'loss') for d in self._drafts):
            extra['loss_terms'] = self._nonfinite_loss_terms()
        extra['batch'] = self._window_metainfo()
        if want_localization:
            extra['localization'] = self._localize()
            self._localized = True
        local = [dict(draft['local'], **extra) for draft in self._drafts]
        per_rank = gather_from_ranks(local)
        events = []
        for index, draft in enumerate(self._drafts):
            ranks = [dict(rank=rank, **per_rank[rank][index]) for rank in range(len(per_rank))]
            event = {k: v for k, v in draft.items() if k != 'local'}
            event['ranks'] = ranks
            event['ranks_with_nonfinite'] = [
                info['rank'] for info in ranks
                if info.get('nonfinite_tensors') or info.get('loss_terms')
                or any(isinstance(v, str) for v in info.get('loss_values', []))
            ]
            event['counters_after'] = dict(self.counters)
            events.append(event)
        self._drafts = []
        return events

    def _publish(self, events: list[dict]) -> None:
        for event in events:
            self._report.add_event(event)
            index = self.counters['events']
            full = (len(self._report.data['events']) <= _FULL_SUMMARIES
                    or event['action'] in ('stopped', 'raised', 'refused')
                    or (event.get('reason') or '').find('escalat') >= 0)
            if full:
                text = format_event(event, self.counters,
                                    self._report.path if self._report.enabled else None,
                                    self.max_listed)
            elif index <= _LINE_SUMMARIES or index % 100 == 0:
                text = (format_event(event, self.counters, None, 3).split('\n')[0]
                        + f'; totals: {format_counters(self.counters)}')
            else:
                continue
            level = logging.ERROR if event['action'] in ('stopped', 'raised',
                                                         'refused') else logging.WARNING
            if self._rank == 0:
                print_log(text, logger='current', level=level)
        terminal = [e for e in events if e['action'] in ('stopped', 'raised', 'refused')]
        if terminal or events:
            self._terminal_event = (terminal or events)[-1]
        self._report_dirty = True

    def _write_report(self, **fields) -> None:
        if self._report is not None:
            self._report.write(self.counters, last_good_checkpoint=self.last_good_checkpoint,
                               **fields)
            self._report_dirty = False

    # ------------------------------------------------------------- iteration
    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._stepped = self._audited = self._overflowed = False
        if not self._window and self._buffers is not None:
            self._buffers.take()  # state before this update's first forward pass
        if self.every_n_train_iters(runner, self.interval):
            self._audit_due.update(self._wrapper_names)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        self._window.append(dict(iter=runner.iter, data_batch=data_batch, outputs=outputs))
        had_event = bool(self._drafts)
        if self._drafts:
            self._publish(self._finalize_drafts())
        if self.check_params and self._audited and self._terminal is None:
            had_event = self._check_parameters(runner) or had_event
        if self._audited:
            if not had_event:
                self.consecutive = 0
            if not self._overflowed:
                self.consecutive_overflow = 0
        self._push_counters(runner)
        if self._stepped:
            self._window = []
        if self._report_dirty:
            self._write_report()
        if self._terminal == 'raised':
            self._raise()
        elif self._terminal == 'stopped':
            self._stop(runner)

    def _push_counters(self, runner) -> None:
        if not any(self.counters.values()):
            return  # healthy runs keep their log lines unchanged
        for key, hub_key in MESSAGE_HUB_KEYS.items():
            runner.message_hub.update_scalar(hub_key, self.counters[key])

    # ---------------------------------------------------------- parameters
    def _nonfinite_state(self, named: list[tuple[str, Tensor]]) -> bool:
        """Agreed across ranks: does any of these parameters/buffers hold NaN/Inf?"""
        local = any_nonfinite([[t for _, t in named]])
        return agree_any_flags(local)[0]

    def _state_draft(self, kind: str, named: list[tuple[str, Tensor]], action: str,
                     reason: str) -> dict:
        names = [n for n, _ in named]
        tensors = [t.detach() for _, t in named]
        local = dict(nonfinite_tensors=self._nonfinite_tensor_list(names, tensors))
        return dict(kind=kind, optim_wrapper='', iter=self._runner.iter + 1,
                    epoch=self._runner.epoch + 1, action=action, reason=reason, local=local)

    def _corruption_action(self) -> str:
        # The weights already hold NaN/Inf: skipping or sanitizing an update cannot undo that.
        if self.policy == 'warn':
            return 'warned'
        if self.policy == 'raise' or (self.policy in ('skip', 'sanitize')
                                      and self.escalate_to == 'raise'):
            return 'raised'
        return 'stopped'

    def _check_parameters(self, runner) -> bool:
        if not self._nonfinite_state(self._state_tensors):
            return False
        action = self._corruption_action()
        reason = ('parameters/buffers are non-finite after the update; an update that is '
                  'already in the weights cannot be skipped or sanitized')
        self._drafts.append(self._state_draft('parameter', self._state_tensors, action, reason))
        self._count(action)
        if action in ('stopped', 'raised'):
            self._terminal = action
            self._frozen = action == 'stopped'
        self._publish(self._finalize_drafts())
        return True

    # --------------------------------------------------------- terminal actions
    def _raise(self) -> None:
        self._write_report(status='raised')
        event = self._terminal_event or {}
        path = self._report.path if self._report.enabled else None
        message = format_event(event, self.counters, path, self.max_listed) if event else \
            'non-finite values detected'
        if event.get('kind') in ('gradient', 'loss'):
            outcome = 'the offending update was NOT applied'
        else:
            outcome = 'the weights already hold NaN/Inf; no checkpoint of them was written'
        raise NonFiniteTrainingError(f'{message}\n(policy={self.policy!r}; {outcome})')

    def _stop(self, runner) -> None:
        self._frozen = True
        saved = None
        # Dropped updates keep the weights good, but NaN can also get in without an update
        # (a corrupt checkpoint, a buggy hook): check, once, before calling them good.
        if not self._nonfinite_state(self._state_tensors):
            filename = f'last_good_iter_{runner.iter + 1}.pth'
            runner.save_checkpoint(runner.work_dir, filename, by_epoch=False)
            saved = osp.join(runner.work_dir, filename)
            self.last_good_checkpoint = saved
            if self._rank == 0:
                # lets `resume=True` continue from the last good state
                with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
                    f.write(saved)
        if saved:
            self._log(f'stopping training at iter {runner.iter + 1}: the last good state '
                      f'(the offending update was not applied) is saved to {saved}',
                      logging.ERROR)
        else:
            self._log(f'stopping training at iter {runner.iter + 1}: the weights are already '
                      'non-finite, so no checkpoint is written; last good checkpoint: '
                      f'{self.last_good_checkpoint}', logging.ERROR)
        self._write_report(status='stopped')
        self._terminal = None
        loop = runner.train_loop
        if not hasattr(loop, 'stop_training'):
            self._log(f'{type(loop).__name__} has no `stop_training`; it may keep iterating, '
                      'but no further update will be applied', logging.WARNING)
        loop.stop_training = True
        if self._interruptible:
            raise StopTrainingNow()

    # -------------------------------------------------------------- checkpoints
    def _guard_checkpoint_hook(self, hook: CheckpointHook) -> None:
        """Refuse CheckpointHook saves of non-finite states *before* it touches anything (its
        ``last_checkpoint`` file, ``max_keep_ckpts`` deletions). Runs on every rank, so the
        refusal and the resulting action are agreed."""
        for method in ('_save_checkpoint', '_save_best_checkpoint'):
            if callable(getattr(hook, method, None)):
                self._patches.replace(hook, method,
                                      lambda original, m=method: self._guarded_save(m, original))

    def _guarded_save(self, method: str, original):
        def save(runner, *args, **kwargs):
            named = [(n, t) for n, t in self._model(runner).state_dict(keep_vars=True).items()
                     if isinstance(t, Tensor) and t.is_floating_point()]
            if not self._nonfinite_state(named):
                result = original(runner, *args, **kwargs)
                if method == '_save_checkpoint':
                    self.last_good_checkpoint = runner.message_hub.get_info(
                        'last_ckpt', self.last_good_checkpoint)
                return result
            self._refuse_checkpoint(runner, named)
            return None
        return save

    def _refuse_checkpoint(self, runner, named: list[tuple[str, Tensor]]) -> None:
        follow_up = self._corruption_action()
        reason = ('the model holds NaN/Inf, so this checkpoint is refused (nothing written); '
                  f'last good checkpoint: {self.last_good_checkpoint}; then: {follow_up}')
        self._drafts.append(self._state_draft('checkpoint', named, 'refused', reason))
        self.counters['events'] += 1
        self.counters['refused_checkpoints'] += 1
        self._publish(self._finalize_drafts())
        self._push_counters(runner)
        self._write_report()
        if follow_up == 'raised':
            self._raise()
        if follow_up == 'stopped':
            # No exception here: this may run inside after_val_epoch, outside run_epoch.
            self._frozen = True
            runner.train_loop.stop_training = True
            self._write_report(status='stopped')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Last line of defence for saves that bypass CheckpointHook (rank 0 only, so it can
        only raise), and the place where the hook's counters enter the checkpoint."""
        checkpoint[CHECKPOINT_KEY] = self.state_dict()
        if not self.protect_checkpoints:
            return
        state = checkpoint.get('state_dict', {})
        named = [(n, t) for n, t in state.items()
                 if isinstance(t, Tensor) and t.is_floating_point()]
        if not any_nonfinite([[t for _, t in named]])[0]:
            return
        bad = self._nonfinite_tensor_list([n for n, _ in named], [t for _, t in named])
        listed = ', '.join(f"{t['name']} (NaN={t['nan']}, Inf={t['posinf'] + t['neginf']})"
                           for t in bad[:self.max_listed])
        raise NonFiniteCheckpointError(
            f'GradientSanitizerHook refused to write a checkpoint at iter {runner.iter + 1}: '
            f'{len(bad)} tensor(s) of its state_dict hold NaN/Inf: {listed}. Last good '
            f'checkpoint: {self.last_good_checkpoint}')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Applied in before_train, and only when resuming (runner.iter > 0 then): counters
        # of a run whose weights are merely loaded with `load_from` do not carry over.
        self._resumed_state = checkpoint.get(CHECKPOINT_KEY)

