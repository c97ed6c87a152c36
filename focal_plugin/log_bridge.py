"""The math layer's log lines in the run's log.

:mod:`focal_plugin.functional` needs torch only, so it logs through the standard ``logging``
module (``focal_plugin.functional.*`` loggers), where nobody sees an INFO line unless they
configured logging. In an MMEngine process those lines belong in the run's log, beside the
lines of the hook and the loss modules: this handler hands them to MMEngine's current logger
(the Runner's, with its file). The records still propagate to the standard loggers as before,
so a handler a user put on the root logger sees them too.
"""
import logging

from mmengine.logging import print_log

__all__ = ['route_functional_logs']

FUNCTIONAL_LOGGER = 'focal_plugin.functional'


class _ToMMEngineLogger(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            print_log(record.getMessage(), logger='current', level=record.levelno)
        except Exception:  # a log line must never break a loss call
            self.handleError(record)


def route_functional_logs() -> None:
    """Send the INFO and louder lines of ``focal_plugin.functional`` to MMEngine's current
    logger (idempotent)."""
    logger = logging.getLogger(FUNCTIONAL_LOGGER)
    if not any(isinstance(h, _ToMMEngineLogger) for h in logger.handlers):
        logger.addHandler(_ToMMEngineLogger(logging.INFO))
    if logger.level == logging.NOTSET:  # a level the user set is theirs
        logger.setLevel(logging.INFO)
