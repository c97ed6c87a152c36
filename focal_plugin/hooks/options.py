"""The hook's constructor arguments, checked once: errors that name the argument."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .policy import ESCALATIONS, Policy

__all__ = ['SanitizerOptions']


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int{" or None" if allow_none else ""}, '
                        f'got {value!r} ({type(value).__name__})')
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value}')


@dataclass(frozen=True)
class SanitizerOptions:
    """See :class:`.GradientSanitizerHook` for what each one means."""
    policy: Policy = Policy.SKIP
    interval: int = 1
    max_consecutive: int | None = 10
    escalate_to: Policy = Policy.STOP
    check_loss: bool = True
    check_params: bool = False
    localize: bool = False
    max_consecutive_overflow: int | None = 16
    protect_checkpoints: bool = True
    report_file: str | None = 'gradient_sanitizer_report.json'
    max_reported_events: int = 20
    max_listed: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, 'policy', Policy.parse(self.policy, 'policy'))
        object.__setattr__(self, 'escalate_to',
                           Policy.parse(self.escalate_to, 'escalate_to', ESCALATIONS))
        _check_int('interval', self.interval, 1)
        _check_int('max_consecutive', self.max_consecutive, 1, allow_none=True)
        for name in ('check_loss', 'check_params', 'localize', 'protect_checkpoints'):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f'{name} must be a bool, got {value!r} ({type(value).__name__})')
        _check_int('max_consecutive_overflow', self.max_consecutive_overflow, 1, allow_none=True)
        if self.report_file is not None and (not isinstance(self.report_file, str)
                                             or not self.report_file):
            raise TypeError(f'report_file must be a non-empty str or None, '
                            f'got {self.report_file!r}')
        _check_int('max_reported_events', self.max_reported_events, 1)
        _check_int('max_listed', self.max_listed, 1)

    def as_config(self) -> dict:
        """The behaviour-defining options, as logged and written to the report."""
        out = asdict(self)
        for key in ('report_file', 'max_reported_events', 'max_listed'):
            out.pop(key)
        out['policy'], out['escalate_to'] = self.policy.value, self.escalate_to.value
        return out
