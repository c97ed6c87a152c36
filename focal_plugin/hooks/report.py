"""The hook's outputs for people: a readable log summary and a JSON report in ``work_dir``.

An *event* is a plain dict assembled by the hook (see ``docs/hook.md`` for the format)::

    dict(iter=8, epoch=1, kind='gradient', action='skipped', optim_wrapper='',
         reason='...', ranks=[dict(rank=0, nonfinite_tensors=[...], loss_terms={...},
                                   grad_norm_per_module={...}, batch=[...],
                                   localization={...}), ...],
         ranks_with_nonfinite=[0], ...)

``iter`` and ``epoch`` are 1-based, as in MMEngine's log lines (``Iter(train) [8/20]``).
"""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
from typing import Any

from mmengine.logging import print_log

from focal_plugin.jsonio import write_json

from .policy import COUNTERS, Action, EventKind, RunStatus

__all__ = ['format_event', 'format_counters', 'log_summary', 'JsonReport', 'KIND_TEXT',
           'ACTION_TEXT']

# Full multi-line summaries for the first few events, one line after that, then 1 in 100.
FULL_SUMMARIES = 3
LINE_SUMMARIES = 20

KIND_TEXT = {
    EventKind.GRADIENT: 'non-finite gradients',
    EventKind.LOSS: 'non-finite loss (gradients finite)',
    EventKind.PARAMETER: 'non-finite parameters/buffers after the update',
    EventKind.CHECKPOINT: 'checkpoint with non-finite parameters/buffers',
    EventKind.BUFFER: 'non-finite buffers after the forward passes (gradients finite)',
}
ACTION_TEXT = {
    Action.WARNED: 'update applied (policy warn)',
    Action.SKIPPED: 'update skipped',
    Action.SANITIZED: 'NaN/Inf gradient entries set to 0, update applied',
    Action.STOPPED: 'training stopped',
    Action.RAISED: 'raising an error',
    Action.REFUSED: 'checkpoint NOT saved',
    Action.RESTORED: 'buffers restored from before the update, update applied',
}



def format_counters(counters: dict) -> str:
    return ' '.join(f'{key}={counters[key]}' for key in COUNTERS)


def _batch_text(batch: list[dict], limit: int) -> str:
    labels = []
    for sample in batch[:limit]:
        label = next((str(sample[k]) for k in ('img_path', 'img_id', 'sample_idx', 'file_name')
                      if k in sample), None)
        labels.append(label if label is not None else json.dumps(sample)[:80])
    more = f' (+{len(batch) - limit} more)' if len(batch) > limit else ''
    return ', '.join(labels) + more


def _norms_text(norms: dict) -> str:
    parts = []
    for module, info in norms.items():
        norm = info['norm']
        text = f'{module}={norm:.3e}' if isinstance(norm, float) else f'{module}={norm}'
        if info['nonfinite_tensors']:
            finite = info['finite_norm']
            text += (f" (finite part {finite:.3e}, {info['nonfinite_tensors']}/"
                     f"{info['tensors']} tensors non-finite)")
        parts.append(text)
    return ', '.join(parts)


def format_event(event: dict, counters: dict, report_path: str | None,
                 max_listed: int = 10) -> str:
    """A multi-line, human-readable summary of one event."""
    kind = EventKind(event['kind'])
    where = f" in optim wrapper '{event['optim_wrapper']}'" if event.get('optim_wrapper') else ''
    lines = [
        f"GradientSanitizerHook: {KIND_TEXT[kind]} at iter {event['iter']} "
        f"(epoch {event['epoch']}){where} -> {ACTION_TEXT[Action(event['action'])]}"
    ]
    if event.get('reason'):
        lines.append(f"  why: {event['reason']}")
    multi_rank = len(event.get('ranks', [])) > 1
    listed_names: list[str] | None = None
    for info in event.get('ranks', []):
        prefix = f"  [rank {info['rank']}] " if multi_rank else '  '
        tensors = info.get('nonfinite_tensors', [])
        if tensors:
            names = [t['name'] for t in tensors]
            what = ('parameter gradient(s)' if kind.concerns_update
                    else 'parameter/buffer tensor(s)')
            if names == listed_names:
                lines.append(f'{prefix}the same {len(tensors)} {what} with NaN/Inf as above')
            else:
                shown = min(len(tensors), max_listed)
                lines.append(f'{prefix}{len(tensors)} {what} with NaN/Inf'
                             + (f' (first {shown})' if shown < len(tensors) else '') + ':')
                for t in tensors[:shown]:
                    lines.append(f"{prefix}  {t['name']}  [module {t['module']}]  "
                                 f"NaN={t['nan']} +Inf={t['posinf']} -Inf={t['neginf']} "
                                 f"of {t['numel']}")
                listed_names = names
        elif kind.concerns_update:
            lines.append(f'{prefix}all local gradients finite')
        terms = info.get('loss_terms')
        if terms:
            lines.append(f'{prefix}non-finite loss terms: '
                         + ', '.join(f'{k}={v}' for k, v in terms.items()))
        elif kind.concerns_update and 'loss_terms' in info:
            lines.append(f'{prefix}loss terms finite')
        if info.get('grad_norm_per_module'):
            norms = _norms_text(info['grad_norm_per_module'])
            lines.append(f'{prefix}grad norm per module: {norms}')
        if info.get('batch'):
            lines.append(f"{prefix}batch: {_batch_text(info['batch'], max_listed)}")
        localization = info.get('localization')
        if localization:
            text = localization.get('conclusion') or localization.get('error')
            lines.append(f'{prefix}localization (replay): {text}')
    for key, label in (('sanitized_entries', 'gradient entries set to 0'),
                       ('loss_scale', 'AMP loss scale'),
                       ('checkpoint', 'checkpoint'),
                       ('restored_buffers', 'buffers restored')):
        if event.get(key) not in (None, [], 0):
            value = event[key]
            if isinstance(value, list):
                value = f'{len(value)} ({", ".join(value[:3])}{", ..." if len(value) > 3 else ""})'
            lines.append(f'  {label}: {value}')
    lines.append(f'  totals: {format_counters(counters)}')
    if report_path:
        lines.append(f'  full report: {report_path}')
    return '\n'.join(lines)


def log_summary(event: dict, counters: dict, reported: int, report_path: str | None,
                max_listed: int) -> tuple[str, int] | None:
    """What to log for an event, and at which level, or None (a long run of events is
    summarised, not listed): in full for the first ``FULL_SUMMARIES`` reported events and for
    every serious or escalated one; one line up to the ``LINE_SUMMARIES``-th event, then one
    in 100. ``reported``: events in the report so far, this one included."""
    action = Action(event['action'])
    index = counters['events']
    if reported <= FULL_SUMMARIES or action.is_serious or event.get('escalated'):
        text = format_event(event, counters, report_path, max_listed)
    elif index <= LINE_SUMMARIES or index % 100 == 0:
        text = (format_event(event, counters, None, 3).split('\n')[0]
                + f'; totals: {format_counters(counters)}')
    else:
        return None
    return text, logging.ERROR if action.is_serious else logging.WARNING


class JsonReport:
    """The JSON report file, rewritten atomically after each change (rank 0 only)."""

    FORMAT = 'focal_plugin.GradientSanitizerHook.report'
    VERSION = 1

    def __init__(self, path: str, config: dict, world_size: int, max_events: int,
                 enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self.max_events = max_events
        self.data: dict = dict(
            format=self.FORMAT, version=self.VERSION, status=RunStatus.RUNNING.value, config=config,
            world_size=world_size, counters={}, first_event=None, events=[],
            events_not_listed=0, amp_overflows=[], amp_overflows_not_listed=0,
            last_good_checkpoint=None)

    def load_events(self, path: str) -> None:
        """On resume: keep the events already reported by the interrupted run."""
        if not self.enabled or not osp.isfile(path):
            return
        try:
            with open(path) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            return
        for key in ('first_event', 'events', 'events_not_listed', 'amp_overflows',
                    'amp_overflows_not_listed', 'last_good_checkpoint'):
            if key in previous:
                self.data[key] = previous[key]

    def add_event(self, event: dict) -> None:
        if self.data['first_event'] is None:
            self.data['first_event'] = event
        if len(self.data['events']) < self.max_events:
            self.data['events'].append(event)
        else:
            self.data['events_not_listed'] += 1

    def add_overflow(self, record: dict) -> None:
        if len(self.data['amp_overflows']) < self.max_events:
            self.data['amp_overflows'].append(record)
        else:
            self.data['amp_overflows_not_listed'] += 1

    def check_writable(self) -> None:
        """Raise ``ValueError`` naming ``report_file`` unless the report can be written where
        it is configured (checked once the work_dir is known, before any training)."""
        if not self.enabled:
            return
        folder = osp.dirname(self.path) or '.'
        problem = ('is a directory' if osp.isdir(self.path) else
                   f'its folder {folder} does not exist' if not osp.isdir(folder) else
                   f'its folder {folder} is not writable' if not os.access(folder, os.W_OK)
                   else None)
        if problem:
            raise ValueError(f'report_file: the report {self.path} cannot be written: '
                             f'{problem} (report_file is relative to work_dir; None turns '
                             'the report off)')

    def write(self, counters: dict, **fields: Any) -> None:
        """Rewrite the file. A failure (disk full, folder removed) is logged, never raised:
        the report must not end the training it protects."""
        self.data['counters'] = dict(counters)
        self.data.update(fields)
        if not self.enabled:
            return
        try:
            write_json(self.path, self.data, indent=2, strict=True)
        except OSError as err:
            print_log(f'GradientSanitizerHook: could not write the report {self.path} '
                      f'({type(err).__name__}: {err}); training goes on, events are still '
                      'logged', logger='current', level=logging.ERROR)
