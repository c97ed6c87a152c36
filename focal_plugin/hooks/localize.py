"""Name the module where NaN/Inf first appears, by replaying one batch under observation.

Same idea as fairseq's ``NanDetector``: hooks on every module report the first one whose forward
output, or the gradient flowing into its output, is non-finite. It runs once, after an event,
so it may be slow (one host sync per module). Nothing here may change training: parameter
gradients, buffers (BatchNorm statistics) and the RNG state are restored afterwards, and any
exception is reported instead of raised.

The backward side uses tensor hooks registered on module outputs rather than
``register_full_backward_hook``, which breaks on the in-place ReLUs common in detectors.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from mmengine.optim import OptimWrapperDict
from torch import Tensor, nn

from focal_plugin.jsonio import json_number

__all__ = ['localize_nonfinite', 'localize_window']

_MAX_LISTED = 10


def _output_tensors(output: Any) -> Iterator[Tensor]:
    if isinstance(output, Tensor):
        yield output
    elif isinstance(output, (list, tuple)):
        for item in output:
            yield from _output_tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from _output_tensors(item)


def _describe(tensor: Tensor) -> dict:
    return dict(
        shape=list(tensor.shape),
        nan=int(torch.isnan(tensor).sum()),
        inf=int(torch.isinf(tensor).sum()))


class _Observer:
    """Forward hooks on every module; each output that needs grad gets a tensor hook."""

    def __init__(self, model: nn.Module):
        self.forward_hits: list[dict] = []
        self.backward_hits: list[dict] = []
        self._handles: list[Any] = []
        for name, module in model.named_modules():
            if not name:
                continue  # the root returns the loss dict: that is the loss check's business
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            for index, tensor in enumerate(_output_tensors(output)):
                if not tensor.is_floating_point():
                    continue
                if len(self.forward_hits) < _MAX_LISTED and not torch.isfinite(tensor).all():
                    self.forward_hits.append(
                        dict(module=name, type=type(module).__name__, output=index,
                             **_describe(tensor.detach())))
                if tensor.requires_grad:
                    self._handles.append(
                        tensor.register_hook(self._grad_hook(name, type(module).__name__, index)))
        return hook

    def _grad_hook(self, name: str, type_name: str, index: int):
        def hook(grad):
            if (grad is not None and len(self.backward_hits) < _MAX_LISTED
                    and not torch.isfinite(grad).all()):
                self.backward_hits.append(
                    dict(module=name, type=type_name, output=index, **_describe(grad)))
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextlib.contextmanager
def _training_state_preserved(model: nn.Module):
    """Restore what a replayed forward/backward would otherwise change."""
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]
    buffers = [b for b in model.buffers()]
    saved_buffers = [b.detach().clone() for b in buffers]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in zip(buffers, saved_buffers):
                buffer.copy_(saved)
        for p, grad in zip(params, saved_grads):
            p.grad = grad
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _interpret(forward_hits: list[dict], backward_hits: list[dict], loss_finite: bool) -> str:
    if forward_hits:
        first = forward_hits[0]
        if first['module'].split('.')[-1] == 'data_preprocessor':
            return ('the batch itself holds NaN/Inf (output of data_preprocessor): a corrupt '
                    'sample or annotation, see the batch metainfo')
        return (f"forward: the output of {first['module']} ({first['type']}) is the first "
                'non-finite value; look at this module and its inputs')
    if backward_hits:
        first = backward_hits[0]
        return (f'forward pass finite; the first non-finite gradient reaches the output of '
                f"{first['module']} ({first['type']}): it was created between that output "
                'and the loss (typically inside the loss function)')
    if not loss_finite:
        return ('every module output and output gradient is finite but the loss is not: the '
                'NaN/Inf comes from loss code outside modules (see the non-finite loss terms)')
    return ('the replay was finite: the fault did not reproduce (non-deterministic, injected, '
            'or caused by state that changed since)')


def localize_nonfinite(model: nn.Module, data_batch: Any,
                       context: Any = None) -> dict:
    """Replay ``data_batch`` through ``model`` (an unwrapped MMEngine ``BaseModel``) and report
    the first modules with non-finite forward outputs and output gradients.

    ``context`` is entered around the forward pass (the optim wrapper's ``optim_context`` so
    that autocast matches training). Returns a JSON-ready dict; never raises.
    """
    result: dict = dict(forward=[], backward=[])
    observer = None
    try:
        with _training_state_preserved(model):
            observer = _Observer(model)
            with context if context is not None else contextlib.nullcontext():
                data = model.data_preprocessor(data_batch, True)
                losses = model._run_forward(data, mode='loss')
            loss, _ = model.parse_losses(losses)
            if loss.requires_grad:
                loss.backward()
            result['forward'] = observer.forward_hits
            result['backward'] = observer.backward_hits
            result['loss'] = json_number(float(loss.detach().float().mean()))
    except Exception as exc:  # localization is best effort and must never stop training
        result['error'] = f'{type(exc).__name__}: {exc}'
    finally:
        if observer is not None:
            observer.remove()
    if 'error' not in result:
        result['conclusion'] = _interpret(result['forward'], result['backward'],
                                          isinstance(result['loss'], float))
    return result


def localize_window(model: nn.Module, optim_wrapper: Any, records: list[dict]) -> dict:
    """Replay every batch of an accumulation window (``records`` of ``iter``/``data_batch``)
    and return the first result that names a module (else the first result).

    Every rank replays every batch (no early exit), so SyncBN-style collectives inside the
    forward stay in lockstep across ranks. The wrapper's ``optim_context`` (autocast) is used
    unless it is an ``OptimWrapperDict`` (no single context)."""
    results = []
    for record in records:
        context = (optim_wrapper.optim_context(model)
                   if not isinstance(optim_wrapper, OptimWrapperDict) else None)
        result = localize_nonfinite(model, record.get('data_batch'), context)
        result['iter'] = record['iter'] + 1
        results.append(result)
    found = [r for r in results if r.get('forward') or r.get('backward')]
    return (found or results)[0] if results else {}
