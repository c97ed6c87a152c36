"""Everything people see of the hook: log lines, the JSON report, MessageHub scalars, the
message of the error it raises. Formats are in :mod:`.report`; logging happens on rank 0."""
from __future__ import annotations

import logging
import os.path as osp

from mmengine.logging import print_log

from .errors import NonFiniteTrainingError
from .policy import Action, EventKind
from .report import LINE_SUMMARIES, JsonReport, format_event, log_summary

__all__ = ['Reporter', 'MESSAGE_HUB_KEYS', 'open_report']

# MessageHub keys; none matches LogProcessor's mean_pattern, so the logs show current values.
MESSAGE_HUB_KEYS = {
    'events': 'train/nonfinite_events', 'skipped': 'train/nonfinite_skipped',
    'sanitized': 'train/nonfinite_sanitized', 'warned': 'train/nonfinite_warned',
    'amp_overflow': 'train/amp_overflow', 'refused_checkpoints': 'train/refused_checkpoints',
    'restored': 'train/nonfinite_restored',
}


class Reporter:
    """Reports events and overflows as the hook finds them.

    Args:
        report: the JSON report (disabled on ranks other than 0, or without a file).
        rank: this process's rank; only rank 0 logs.
        max_listed: tensors/samples listed per rank in a summary.
    """

    def __init__(self, report: JsonReport, rank: int = 0, max_listed: int = 10):
        self.report = report
        self.rank = rank
        self.max_listed = max_listed
        self.last_event: dict | None = None  # the one a raise explains
        self._dirty = False

    @property
    def path(self) -> str | None:
        return self.report.path if self.report.enabled else None

    def log(self, message: str, level: int = logging.INFO) -> None:
        if self.rank == 0:
            print_log(f'GradientSanitizerHook: {message}', logger='current', level=level)

    def publish(self, events: list[dict], counters: dict) -> None:
        for event in events:
            self.report.add_event(event)
            summary = log_summary(event, counters, len(self.report.data['events']), self.path,
                                  self.max_listed)
            if summary is not None and self.rank == 0:
                print_log(summary[0], logger='current', level=summary[1])
        if events:
            serious = [e for e in events if Action(e['action']).is_serious]
            self.last_event = (serious or events)[-1]
            self._dirty = True

    def overflow(self, record: dict, counters: dict, limit: int | None) -> None:
        """An AMP overflow left to the GradScaler: listed, logged sparingly, not an event."""
        self.report.add_overflow(record)
        self._dirty = True
        n = counters['amp_overflow']
        if n <= LINE_SUMMARIES or n % 100 == 0:
            self.log(f"AMP overflow at iter {record['iter']} (loss scale "
                     f"{record['loss_scale']:g}): the GradScaler skips this update and lowers "
                     f"the scale; not counted as divergence ({record['consecutive']} in a row, "
                     f'limit {limit}; {n} in total)')

    def saved_without_open_update(self, path: str | None, first_iter: int, iter: int,
                                  replaced: list[str]) -> None:
        """A checkpoint due inside an accumulation window was saved with the buffers of
        before the window (see :mod:`.checkpoint_guard`)."""
        self.log(f'the checkpoint at iter {iter} ({path}) holds the buffers of before the open '
                 f'update (iterations {first_iter}-{iter} so far): its forward passes made '
                 f'{len(replaced)} buffer(s) non-finite, e.g. {replaced[0]}; the update itself '
                 'is audited when its window ends', logging.WARNING)

    def write(self, counters: dict, last_good_checkpoint: str | None, **fields) -> None:
        self.report.write(counters, last_good_checkpoint=last_good_checkpoint, **fields)
        self._dirty = False

    def flush(self, counters: dict, last_good_checkpoint: str | None) -> None:
        if self._dirty:
            self.write(counters, last_good_checkpoint)

    @staticmethod
    def push_counters(message_hub, counters: dict) -> None:
        if any(counters.values()):  # healthy runs keep their log lines unchanged
            for key, hub_key in MESSAGE_HUB_KEYS.items():
                message_hub.update_scalar(hub_key, counters[key])

    def error(self, counters: dict, policy: str) -> NonFiniteTrainingError:
        """The error that ends training under ``'raise'``, explaining the last event."""
        event = self.last_event or {}
        message = (format_event(event, counters, self.path, self.max_listed) if event
                   else 'non-finite values detected')
        if event and EventKind(event['kind']).concerns_update:
            outcome = 'the offending update was NOT applied'
        else:
            outcome = 'the weights already hold NaN/Inf; no checkpoint of them was written'
        return NonFiniteTrainingError(f'{message}\n(policy={policy!r}; {outcome})')


def open_report(work_dir: str, options, rank: int, world_size: int, resumed: bool) -> Reporter:
    """The reporter of a run: its JSON report checked writable now, holding the events of the
    interrupted run when ``resumed``."""
    path = osp.join(work_dir, options.report_file) if options.report_file else ''
    report = JsonReport(path, options.as_config(), world_size, options.max_reported_events,
                        enabled=bool(path) and rank == 0)
    report.check_writable()
    if resumed and path:
        report.load_events(path)  # the events of the interrupted run stay in the report
    return Reporter(report, rank, options.max_listed)
