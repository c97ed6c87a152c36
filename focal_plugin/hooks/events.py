"""Building the events the hook reports: what was non-finite, where, in which batch.

Runs only after a non-finite value was found (the diagnostic path; it may sync and gather
across ranks). An event starts as a *draft* on each rank (``local`` holds this rank's
details); :func:`finalize` gathers every rank's details in one collective. The format is in
``docs/hook.md``; ``iter`` and ``epoch`` are 1-based, as in MMEngine's log lines.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from focal_plugin.jsonio import json_number

from .batch_info import batch_metainfo
from .consensus import gather_from_ranks
from .finite_check import nonfinite_counts, norms_by_prefix, real_view
from .policy import Action, EventKind

__all__ = ['float_state', 'gradient_values', 'named_gradients', 'nonfinite_tensor_list',
           'update_draft',
           'state_draft', 'UpdateWindow', 'finalize']

_MAX_SAMPLES = 64


def float_state(state_dict: dict) -> list[tuple[str, Tensor]]:
    """The tensors of a state dict that can hold NaN/Inf, floating-point and complex (as their
    real views, :func:`.finite_check.real_view`); integer buffers cannot."""
    views = ((name, real_view(t)) for name, t in state_dict.items() if isinstance(t, Tensor))
    return [(name, view) for name, view in views if view is not None]


def infinite_before_training(named: list[tuple[str, Tensor]]) -> frozenset:
    """Names of the tensors that hold +-inf and no NaN before training: legitimate values (an
    attention mask's -inf, a quantization observer's +-inf min/max), not corruption."""
    return frozenset(name for name, t in named
                     if bool(torch.isinf(t).any()) and not bool(torch.isnan(t).any()))


def checked_state(named: list[tuple[str, Tensor]], inf_allowed: frozenset) -> list:
    """The model state as the finiteness rule sees it: NaN anywhere is corruption; +-inf is
    corruption except in the tensors that held +-inf before training (their infs are masked
    here, their NaNs are not)."""
    if not inf_allowed:
        return named
    return [(name, torch.where(torch.isinf(t), 0.0, t.detach()) if name in inf_allowed else t)
            for name, t in named]


def gradient_values(param: Tensor) -> Tensor:
    """``param.grad``, or the values of a sparse gradient (coalesced in place); a complex
    gradient as its real view."""
    if param.grad.is_sparse:
        param.grad = param.grad.coalesce()
        return real_view(param.grad._values())
    return real_view(param.grad)


def named_gradients(params: Sequence[Tensor], names: dict[int, str],
                    wrapper_name: str) -> list[tuple[str, Tensor]]:
    """The gradients of ``params`` that can hold NaN/Inf, named after the model's parameters
    (``names``: ``id(param) -> name``), or by position for parameters the model lacks."""
    named = []
    for index, param in enumerate(params):
        grad = gradient_values(param)
        if grad is not None:
            named.append((names.get(id(param))
                          or f'<{wrapper_name or "optim_wrapper"} param #{index}>', grad))
    return named


def _module_of(name: str) -> str:
    return name.rpartition('.')[0] or '<model>'


def nonfinite_tensor_list(names: Sequence[str], tensors: Sequence[Tensor]) -> list[dict]:
    """One entry per tensor holding NaN/Inf: name, module, counts."""
    listed = []
    for name, tensor, (nan, posinf, neginf) in zip(names, tensors, nonfinite_counts(tensors)):
        if nan or posinf or neginf:
            listed.append(dict(name=name, module=_module_of(name), nan=nan, posinf=posinf,
                               neginf=neginf, numel=tensor.numel()))
    return listed


def update_draft(kind: EventKind, wrapper_name: str, named_grads: list[tuple[str, Tensor]],
                 losses: Iterable[Tensor], loss_scale: float | None, iter: int,
                 epoch: int) -> dict:
    """This rank's explanation of a non-finite update: which gradients, the gradient norm of
    each top-level module (unscaled by the AMP loss scale), the captured loss values."""
    names = [n for n, _ in named_grads]
    grads = [g for _, g in named_grads]
    norms = norms_by_prefix(names, grads)
    if loss_scale:
        for info in norms.values():
            for key in ('norm', 'finite_norm'):
                if isinstance(info[key], float):
                    info[key] /= loss_scale
    local = dict(nonfinite_tensors=nonfinite_tensor_list(names, grads),
                 grad_norm_per_module=norms,
                 loss_values=[json_number(v.float().mean()) for v in losses])
    return dict(kind=kind.value, optim_wrapper=wrapper_name, iter=iter, epoch=epoch,
                loss_scale=loss_scale, local=local)


def state_draft(kind: EventKind, named: list[tuple[str, Tensor]], action: Action, iter: int,
                epoch: int, last_good: str | None) -> dict:
    """A non-finite model state: after an update (``PARAMETER``; ``action`` is what follows),
    about to be checkpointed (``CHECKPOINT``: the save is refused, then ``action``), or in
    the buffers of an update with finite gradients (``BUFFER``)."""
    if kind is EventKind.CHECKPOINT:
        reason = ('the model holds NaN/Inf, so this checkpoint is refused (nothing written); '
                  f'last good checkpoint: {last_good}; then: {action.value}')
        action = Action.REFUSED
    elif kind is EventKind.BUFFER:
        reason = ('buffers are non-finite after the forward passes while the gradients and '
                  'the loss are finite (e.g. a finite but huge input overflowed a BatchNorm '
                  'variance): no gradient explains them, so the update is applied and the '
                  'buffers of before it are put back')
    else:
        reason = ('parameters/buffers are non-finite after the update; an update that is '
                  'already in the weights cannot be skipped or sanitized')
    local = dict(nonfinite_tensors=nonfinite_tensor_list(
        [n for n, _ in named], [t.detach() for _, t in named]))
    return dict(kind=kind.value, optim_wrapper='', iter=iter, epoch=epoch,
                action=action.value, reason=reason, escalated=False, local=local)


class UpdateWindow:
    """The iterations since the last optimizer update (one, without accumulation): their batches
    and step outputs, kept to explain an event."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def append(self, iter: int, data_batch: Any, outputs: Any) -> None:
        self.records.append(dict(iter=iter, data_batch=data_batch, outputs=outputs))

    def clear(self) -> None:
        self.records = []

    def __bool__(self) -> bool:
        return bool(self.records)

    def _label(self, key: str, record: dict) -> str:
        return f"{key}@iter{record['iter'] + 1}" if len(self.records) > 1 else key

    def nonfinite_loss_terms(self) -> dict:
        """Loss terms (keys containing 'loss', as in ``parse_losses``) that were non-finite in
        the step outputs of the window."""
        found = {}
        for record in self.records:
            outputs = record.get('outputs')
            if not isinstance(outputs, dict):
                continue
            items = [(k, v) for k, v in outputs.items()
                     if 'loss' in k and isinstance(v, Tensor) and v.is_floating_point()]
            if not items:
                continue
            values = torch.stack([v.detach().float().mean().cpu() for _, v in items]).tolist()
            for (key, _), value in zip(items, values):
                if not math.isfinite(value):
                    found[self._label(key, record)] = json_number(value)
        if len(found) > 1:  # the total 'loss' adds nothing when the culprit terms are named
            found = {k: v for k, v in found.items() if k.split('@')[0] != 'loss'}
        return found

    def metainfo(self) -> list[dict]:
        samples = []
        multi = len(self.records) > 1
        for record in self.records:
            for sample in batch_metainfo(record.get('data_batch')):
                samples.append(dict(sample, iter=record['iter'] + 1) if multi else sample)
        return samples[:_MAX_SAMPLES]


def finalize(drafts: list[dict], extra: dict, counters: dict) -> list[dict]:
    """Turn this rank's drafts into events holding every rank's details (one collective;
    every rank calls it with the same number of drafts)."""
    per_rank = gather_from_ranks([dict(draft['local'], **extra) for draft in drafts])
    events = []
    for index, draft in enumerate(drafts):
        ranks = [dict(rank=rank, **per_rank[rank][index]) for rank in range(len(per_rank))]
        event = {k: v for k, v in draft.items() if k != 'local'}
        event['ranks'] = ranks
        event['ranks_with_nonfinite'] = [
            info['rank'] for info in ranks
            if info.get('nonfinite_tensors') or info.get('loss_terms')
            or any(isinstance(v, str) for v in info.get('loss_values', []))
        ]
        event['counters_after'] = dict(counters)
        events.append(event)
    return events
