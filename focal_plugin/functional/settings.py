"""Process-wide switches read from an environment variable and settable in code (the fused
backend, the value-check mode): one rule for both.

A bad value in the environment is reported, naming the variable, where the setting is first
used rather than at import (importing the package never fails on it); a bad value passed in
code is reported at once, naming the argument.
"""
from __future__ import annotations

import os

__all__ = ['EnvChoice']


class EnvChoice:
    """One of ``choices``; initially ``$env`` (lower-cased) or ``default``."""

    def __init__(self, env: str, choices: tuple, default: str, argument: str) -> None:
        self.env, self.choices, self.argument = env, choices, argument
        self.value = os.environ.get(env, default).strip().lower()

    def set(self, value: str) -> None:
        if value not in self.choices:
            raise ValueError(f'{self.argument} must be one of {self.choices}, got {value!r}')
        self.value = value

    def get(self) -> str:
        if self.value not in self.choices:
            raise ValueError(f'{self.env} must be one of {self.choices}, got {self.value!r}')
        return self.value
