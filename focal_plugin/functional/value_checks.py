"""Checks of tensor *values* (label ranges, probability targets) that never wait on the device.

To raise, a check of values needs its verdict on the host. On CUDA, reading it (``.item()``,
``.tolist()``, ``bool(t)``) blocks the host until the GPU has run everything queued before it:
one stall per loss call, five per RetinaNet step (one call per FPN level). So on CUDA the
statistics a check needs (a min and a max, say) are reduced on the device into a small tensor,
copied to pinned host memory without blocking, and judged once they have arrived: at a later
loss call, which polls a CUDA event (``Event.query()``, never ``synchronize()``), or at
:func:`flush_value_checks`. The ``ValueError`` then names the argument, its values and how many
calls ago they were passed. Where there is no device to wait for (CPU), the check is immediate.

Modes (``FOCAL_PLUGIN_VALUE_CHECKS`` environment variable, or :func:`set_value_check_mode`):

- ``'auto'`` (default): deferred for CUDA tensors, immediate otherwise;
- ``'immediate'``: always read at once (one host synchronisation per check on CUDA);
- ``'deferred'``: always deferred, CPU included (to test the CUDA behaviour without a GPU).

What deferral costs: a bad value is reported one or more calls late (in training, at the next
iteration), after the loss of the bad call has been computed; a process that ends with a
verdict pending logs it at exit (:func:`flush_value_checks` raises it earlier). Bad *labels*
never index memory in this package (masks are built by comparison, not ``one_hot`` or
``scatter``), so a late report is the worst that happens.

Inside ``torch.compile`` a check is one opaque operator of the graph (``focal_plugin::
check_values``, rule named by kind and string arguments): no graph break, and it runs when the
graph runs, immediate or deferred by the mode. Inside ``torch.func`` transforms the values are
read from the plain tensor under the transform's wrappers (under ``vmap``: every sample).
"""
from __future__ import annotations

import atexit
import logging
from collections import deque
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from .settings import EnvChoice

__all__ = ['MODES', 'check_values', 'verdict_rule', 'flush_value_checks',
           'set_value_check_mode', 'get_value_check_mode', 'is_deferred', 'plain_tensor']

MODES = ('auto', 'immediate', 'deferred')
MAX_PENDING = 256  # a bound on memory only: the GPU is never that many loss calls behind

_logger = logging.getLogger(__name__)
Verdict = Callable[[List[float]], Optional[str]]
# kind -> factory(*args: str) -> Verdict; a check names its rule by kind and string arguments
# (not a closure), so that a compiled graph can carry it as constants (see _check_in_graph)
VERDICTS: Dict[str, Callable[..., Verdict]] = {}
_SEP = '\x1f'
_mode = EnvChoice('FOCAL_PLUGIN_VALUE_CHECKS', MODES, 'auto', 'mode')
_pending: deque = deque()  # (host copy, event or None, verdict)


def set_value_check_mode(mode: str) -> None:
    """``'auto'`` | ``'immediate'`` | ``'deferred'`` (see the module docstring)."""
    _mode.set(mode)


def get_value_check_mode() -> str:
    return _mode.get()


def is_deferred(tensor: Tensor) -> bool:
    """Whether a check of ``tensor`` is deferred, or traced into a compiled graph (either way
    the caller cannot branch on the values)."""
    if torch.compiler.is_compiling():
        return True
    mode = get_value_check_mode()
    return mode == 'deferred' or (mode == 'auto' and tensor.device.type == 'cuda')


def verdict_rule(kind: str):
    """Register ``factory(*args: str) -> verdict`` as the rule ``kind`` of :func:`check_values`
    (a verdict maps the statistics' values to an error message, or None when they are fine)."""
    def register(factory):
        VERDICTS[kind] = factory
        return factory
    return register


def plain_tensor(tensor: Tensor) -> Tensor:
    """``tensor`` itself, or, inside ``torch.func`` transforms, the plain tensor under their
    wrappers: under ``vmap`` that holds every sample of the batch, which is what a check of
    values must see (a batched tensor cannot be read on the host at all)."""
    if torch.compiler.is_compiling():  # (the compiler handles transforms itself)
        return tensor
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(tensor):
        tensor = functorch.get_unwrapped(tensor)
    return tensor


def _raise(verdict: Verdict, values: List[float], deferred: bool) -> None:
    message = verdict(values)
    if message is None:
        return
    if deferred:
        message += (' (checked without waiting on the device and reported at a later check: '
                    'the call that passed it has returned; see FOCAL_PLUGIN_VALUE_CHECKS)')
    _pending.clear()  # one error at a time; later verdicts may be consequences of the same data
    raise ValueError(message)


def _judge_arrived() -> None:
    """Judge the pending checks whose statistics have reached the host, oldest first."""
    while _pending:
        host, event, verdict = _pending[0]
        if event is not None and not event.query():
            return  # still on its way; the stream runs in order, so are the later ones
        _pending.popleft()
        _raise(verdict, host.tolist(), True)


def check_values(stats: Tensor, kind: str, *args: str) -> Optional[List[float]]:
    """Judge ``stats`` (a small 1-D tensor reduced from the checked tensor, on its device) with
    the rule ``kind`` (:func:`verdict_rule`) made from ``args``: now, or once they have reached
    the host (see the module docstring). Either way the verdicts of earlier deferred checks
    that have arrived are judged first. Returns the values when the check was immediate (the
    caller may use them), None when it is deferred or traced into a compiled graph.

    Inside ``torch.compile`` the check is one opaque operator of the graph
    (:func:`_check_in_graph`): no graph break (``fullgraph=True`` works), and at run time it
    does what an eager call does, immediate or deferred by the mode."""
    if torch.compiler.is_compiling():
        _check_in_graph(stats.detach(), _SINK, kind, _SEP.join(args))
        return None
    return _check(stats, VERDICTS[kind](*args))


def _check(stats: Tensor, verdict: Verdict) -> Optional[List[float]]:
    _judge_arrived()
    if not is_deferred(stats):
        values = stats.tolist()
        _raise(verdict, values, False)
        return values
    stats = stats.detach()
    if stats.device.type == 'cuda':
        host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
        host.copy_(stats, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
    else:  # deferral forced on CPU: the copy is there at once, judged at the next check
        host, event = stats.clone(), None
    host.is_host_copy = True  # reading it never waits on a device (tests count the others)
    _pending.append((host, event, verdict))
    if len(_pending) > MAX_PENDING:
        oldest = _pending[0][1]
        if oldest is not None:
            oldest.synchronize()
        _judge_arrived()
    return None


# What the in-graph check "mutates": a compiler drops an operator whose results nobody uses
# unless it mutates an input; this one-element tensor is that input (never read).
_SINK = torch.zeros(1)


@torch.library.custom_op('focal_plugin::check_values', mutates_args=('sink',))
def _check_in_graph(stats: Tensor, sink: Tensor, kind: str, args: str) -> None:
    """:func:`check_values` as an operator a compiled graph calls at run time."""
    _check(stats, VERDICTS[kind](*(args.split(_SEP) if args else ())))


@_check_in_graph.register_fake
def _(stats: Tensor, sink: Tensor, kind: str, args: str) -> None:
    return None


def flush_value_checks() -> None:
    """Wait for every pending check and raise the first failed one (end of an epoch, end of
    training, a test)."""
    for _, event, _ in _pending:
        if event is not None:
            event.synchronize()
    _judge_arrived()


@atexit.register
def _report_at_exit() -> None:
    try:
        flush_value_checks()
    except ValueError as err:  # nobody left to catch it: say it
        _logger.error('focal_plugin: %s', err)
    except Exception:  # noqa: BLE001  (CUDA already torn down: nothing left to report)
        pass
