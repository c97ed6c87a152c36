"""The hook's constructor arguments, checked once: errors that name the argument."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..functional.validation import check_count, check_flag
from .policy import ESCALATIONS, Policy

__all__ = ['SanitizerOptions']


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
        # the package's rules for counts and flags (functional/validation.py)
        for name, allow_none in (('interval', False), ('max_consecutive', True),
                                 ('max_consecutive_overflow', True),
                                 ('max_reported_events', False), ('max_listed', False)):
            object.__setattr__(self, name, check_count(getattr(self, name), name, 1, allow_none))
        for name in ('check_loss', 'check_params', 'localize', 'protect_checkpoints'):
            object.__setattr__(self, name, check_flag(getattr(self, name), name))
        if self.report_file is not None and (not isinstance(self.report_file, str)
                                             or not self.report_file):
            raise TypeError(f'report_file must be a non-empty str or None, '
                            f'got {self.report_file!r}')

    def as_config(self) -> dict:
        """The behaviour-defining options, as logged and written to the report."""
        out = asdict(self)
        for key in ('report_file', 'max_reported_events', 'max_listed'):
            out.pop(key)
        out['policy'], out['escalate_to'] = self.policy.value, self.escalate_to.value
        return out
