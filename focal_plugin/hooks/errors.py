"""Exceptions raised by :class:`~focal_plugin.hooks.GradientSanitizerHook`."""

__all__ = ['NonFiniteTrainingError', 'NonFiniteCheckpointError']


class NonFiniteTrainingError(FloatingPointError):
    """Training produced NaN/Inf and the policy (or an escalation) says to raise.

    The message names the iteration, the parameters and their modules, NaN/Inf counts, the
    non-finite loss terms and the path of the JSON report. The offending update was NOT applied.
    """


class NonFiniteCheckpointError(NonFiniteTrainingError):
    """Something tried to write a checkpoint whose parameters or buffers hold NaN/Inf."""
