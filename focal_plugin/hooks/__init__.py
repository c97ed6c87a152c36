"""Hooks of focal_plugin (registered in MMEngine's root ``HOOKS`` on import).

:class:`GradientSanitizerHook` audits gradients between backward and ``optimizer.step`` and
decides what to do with non-finite updates (warn / skip / sanitize / stop / raise); see
``docs/hook.md``.
"""
from .errors import NonFiniteCheckpointError, NonFiniteTrainingError
from .gradient_sanitizer import GradientSanitizerHook

__all__ = ['GradientSanitizerHook', 'NonFiniteTrainingError', 'NonFiniteCheckpointError']
