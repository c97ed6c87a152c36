"""The range check of probability / score targets, and its switch.

Soft targets outside [0, 1] make the focal family meaningless without making it fail loudly:
``sigmoid_focal_loss(x, 3 * t)`` is NaN (``log(1 - t)`` of ``t > 1``) and ``varifocal_loss``
with negative IoU scores returns a finite number that trains towards nothing. The usual
causes are a mask still in 0-255 pixels and labels encoded as -1/1. Every loss taking
probabilities or scores as targets therefore checks them once per call and names the cause.

Cost and design: one fused min/max pass over the targets (``torch.aminmax``); on the CPU one
host read per call, on CUDA none (the verdict is read once it has arrived, see
:mod:`.value_checks`). On the CPU ``sigmoid_focal_loss`` on float targets also finds out
whether they are hard 0/1 labels (that buys the cheaper exact path) in the same read.
``tools/benchmark_losses.py`` measures the check against the fused loss (results in
``results/benchmark_losses.md``). Where even that matters (a production run whose targets
are known good), turn it off: ``set_target_check(False)`` or ``FOCAL_PLUGIN_CHECK_TARGETS=0``.

Non-finite *logits* are not checked here on purpose: a NaN logit is a symptom of an earlier
failure, and the loss passes it on (NaN loss and gradient) so that ``GradientSanitizerHook``
sees it, acts and reports where it came from. Hiding it in the loss would hide the failure.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
from torch import Tensor

from .value_checks import check_values, is_deferred, plain_tensor, verdict_rule

__all__ = ['check_probability_targets', 'check_activated_inputs', 'check_label_range',
           'set_target_check', 'get_target_check']

_FALSE = ('0', 'false', 'off', 'no')
_enabled = os.environ.get('FOCAL_PLUGIN_CHECK_TARGETS', '1').strip().lower() not in _FALSE


def set_target_check(enabled: bool) -> None:
    """Turn the [0, 1] range check of soft/score targets on (default) or off, process-wide."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f'enabled must be a bool, got {type(enabled).__name__}')
    _enabled = enabled


def get_target_check() -> bool:
    return _enabled


def _likely_cause(lo: float, hi: float) -> str:
    if lo == -1.0:
        return ('they look like -1/1 labels: map them to 0/1 (e.g. (targets + 1) / 2 or '
                'targets.clamp(min=0))')
    if hi > 1.0:
        return ('they look like 0-255 pixels or unnormalized scores/class indices: divide '
                'pixel masks by 255, one-hot encode class indices')
    return 'scores below 0 (e.g. an IoU computed as negative): clamp them to [0, 1]'


@verdict_rule('probability range')
def _range_verdict(name: str):
    def verdict(values):
        lo, hi = values[0], values[1]
        if lo >= 0.0 and hi <= 1.0:  # NaN fails both comparisons
            return None
        if math.isnan(lo) or math.isnan(hi):
            return f'{name} contain NaN; {name} must be probabilities/scores in [0, 1]'
        return (f'{name} must be probabilities/scores in [0, 1], got min {lo + 0.0:g}, max '
                f'{hi + 0.0:g}: {_likely_cause(lo, hi)}')
    return verdict


def check_probability_targets(targets: Tensor, name: str = 'targets',
                              detect_hard: bool = False) -> Optional[bool]:
    """Raise ``ValueError`` unless every element of the float tensor ``targets`` is in [0, 1]
    (at once, or on CUDA once the verdict has reached the host: :mod:`.value_checks`).

    With ``detect_hard=True`` also return whether all targets are exactly 0 or 1, computed in
    the same host synchronisation, where the check is immediate; where it is deferred nothing
    is read on the host, and the answer is None (unknown: the caller takes the soft path,
    exact for hard labels too). The range check is skipped when turned off
    (:func:`set_target_check`); the hard-label detection is not.
    """
    if targets.numel() == 0:
        return True if detect_hard else None
    t = plain_tensor(targets.detach())
    deferred = is_deferred(t)
    hard = detect_hard and not deferred
    if not _enabled and not hard:
        return None
    stats = list(torch.aminmax(t)) if _enabled else [t.new_zeros(()), t.new_ones(())]
    if hard:
        stats.append(((t == 0) | (t == 1)).all().to(t.dtype))
    values = check_values(torch.stack(stats), 'probability range', name)  # NaN: min and max
    return bool(values[-1]) if hard else None


@verdict_rule('activated range')
def _activated_verdict(name: str):
    def verdict(values):
        lo, hi = values
        if lo >= 0.0 and hi <= 1.0:  # NaN fails both comparisons
            return None
        return (f'{name} must be probabilities in [0, 1] with activated=True, got min '
                f'{lo + 0.0:g}, max {hi + 0.0:g}: pass logits with activated=False, or apply '
                f'sigmoid first')
    return verdict


def check_activated_inputs(inputs: Tensor, name: str = 'inputs') -> Tensor:
    """With ``activated=True`` the inputs are probabilities: raise ``ValueError`` naming
    ``name`` and the flag unless every element is in [0, 1] (NaN included). torch's own check
    in ``binary_cross_entropy`` names neither, and on CUDA it is a device-side assert that
    ends the process; this one is a min/max pass judged without a host synchronisation on
    CUDA (:mod:`.value_checks`), like the target check, and switched off with it.

    Returns the inputs to compute with: where the verdict is deferred, out-of-range elements
    are replaced by 0.5 (so ``binary_cross_entropy`` never asserts on the device; the error
    comes at the next check), elsewhere the inputs themselves."""
    if inputs.numel() == 0 or not _enabled:
        return inputs
    t = plain_tensor(inputs.detach())
    check_values(torch.stack(list(torch.aminmax(t))).double(), 'activated range', name)
    if not is_deferred(t):
        return inputs
    return torch.where((inputs >= 0) & (inputs <= 1), inputs, 0.5)


def check_label_range(labels: Tensor, low: Optional[int], high: int, name: str,
                      meaning: str = '') -> None:
    """Raise ``ValueError`` unless every label is in ``[low, high]`` (``low`` None: no lower
    bound) and, for float labels, a whole number; ``meaning`` is appended to the rule in the
    message (e.g. what ``high`` stands for). Without a host sync on CUDA
    (:mod:`.value_checks`)."""
    if labels.numel() == 0:
        return
    t = plain_tensor(labels.detach())
    lo, hi = torch.aminmax(t)
    stats = [lo.double(), hi.double()]
    if t.is_floating_point():  # class indices given as floats: whole numbers only
        stats.append((t != t.trunc()).any().double())
    check_values(torch.stack(stats), 'label range', str(low), str(high), name, meaning)


@verdict_rule('label range')
def _label_verdict(low: str, high: str, name: str, meaning: str):
    low_bound = None if low == 'None' else int(low)
    high_bound = int(high)
    rule = f'in [{low}, {high}]' if low_bound is not None else f'<= {high}'

    def verdict(values):
        if len(values) == 3 and values[2]:
            return f'{name} must be whole class indices, got fractional values (float labels)'
        if (low_bound is None or low_bound <= values[0]) and values[1] <= high_bound:
            return None
        return f'{name} must be {rule}{meaning}, got min {values[0]:g}, max {values[1]:g}'
    return verdict
