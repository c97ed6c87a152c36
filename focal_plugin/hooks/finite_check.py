"""Finiteness checks over many tensors.

Two tiers, following the rule that diagnostics cost nothing until they are needed:

* :func:`any_nonfinite` is the hot path: ``torch._foreach_norm`` (a single fused pass over the
  data; a NaN or an Inf in a tensor makes its norm non-finite), then ONE host sync for the
  verdict.
* :func:`nonfinite_counts` and :func:`norms_by_prefix` run only after a non-finite value was
  found. They may be slower; they explain what went wrong.

The L2 norm is used instead of the Inf norm because on CPU ``_foreach_norm(ord=inf)`` is not
vectorised (a scalar loop), while the L2 norm is. The L2 norm of finite values can overflow
(norm > 1.8e19, e.g. gradients still multiplied by an AMP loss scale), so a flagged group is
confirmed exactly.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from focal_plugin.jsonio import json_number

__all__ = [
    'any_nonfinite', 'tensor_norms', 'nonfinite_counts', 'norms_by_prefix', 'floating_tensors',
    'zero_nonfinite_', 'real_view',
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def real_view(tensor: Tensor | None) -> Tensor | None:
    """What the finiteness rule looks at in ``tensor``: itself if floating-point, its
    ``(..., 2)`` real view if complex (the same memory: a NaN in either part is found, and
    zeroing an entry in place zeroes it in the complex tensor), None otherwise (integer and
    bool tensors, e.g. ``num_batches_tracked``, cannot hold NaN or Inf)."""
    if tensor is None:
        return None
    if tensor.is_complex():
        return torch.view_as_real(tensor.resolve_conj())  # a copy only for a lazy conj view
    return tensor if tensor.is_floating_point() else None


def floating_tensors(tensors: Iterable[Tensor]) -> list[Tensor]:
    """The tensors of ``tensors`` that can hold NaN/Inf, as :func:`real_view` sees them;
    sparse ones are replaced by their values."""
    out = []
    for tensor in tensors:
        if tensor is not None and tensor.is_sparse:
            tensor = tensor.coalesce().values()
        tensor = real_view(tensor)
        if tensor is not None:
            out.append(tensor)
    return out


def _foreach_groups(tensors: Sequence[Tensor]) -> dict[tuple, list[int]]:
    """Indices of ``tensors`` by (device, low precision): what one foreach call can take."""
    groups: dict[tuple, list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype in _LOW_PRECISION), []).append(index)
    return groups


def _foreach_norm(tensors: list[Tensor], low_precision: bool) -> list[Tensor]:
    # Half-precision tensors are reduced in float32 so that a finite fp16 gradient with a
    # norm above 65504 does not look like an overflow.
    dtype = torch.float32 if low_precision else None
    if hasattr(torch, '_foreach_norm'):
        return list(torch._foreach_norm(tensors, 2, dtype=dtype))
    return [torch.linalg.vector_norm(t, dtype=dtype) for t in tensors]  # pragma: no cover


def tensor_norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Per-tensor L2 norms as 0-d tensors, computed with fused foreach kernels (no sync)."""
    norms: list[Tensor | None] = [None] * len(tensors)
    for (_, low_precision), indices in _foreach_groups(tensors).items():
        group_norms = _foreach_norm([tensors[i] for i in indices], low_precision)
        for i, norm in zip(indices, group_norms):
            norms[i] = norm
    return norms  # type: ignore[return-value]


def _group_finite(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
    """0-d bool on ``device``: are all norms of ``tensors`` finite? (no sync)

    A handful of ops whatever the number of tensors: for the ~100 small gradient tensors of a
    small model, per-op overhead rather than memory bandwidth dominates this check.
    """
    if all(t.dim() == 0 for t in tensors):  # loss scalars: their values are their norms
        return torch.isfinite(torch.stack([t.float() for t in tensors]).to(device)).all()
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) == 1 and not dtypes & set(_LOW_PRECISION) and \
            len({t.device for t in tensors}) == 1:  # the common case: one foreach call
        return torch.isfinite(torch.stack(_foreach_norm(list(tensors), False)).to(device)).all()
    parts = []
    for (_, low_precision), indices in _foreach_groups(tensors).items():
        norms = _foreach_norm([tensors[i] for i in indices], low_precision)
        parts.append(torch.stack(norms).float().to(device))
    return torch.isfinite(torch.cat(parts)).all()


def _exactly_nonfinite(tensors: Sequence[Tensor]) -> bool:
    flags = [torch.logical_not(torch.isfinite(t).all()).cpu() for t in tensors]
    return bool(torch.stack(flags).any()) if flags else False


def _all_finite_at_once(groups: Sequence[Sequence[Tensor]]) -> bool:
    """One norm pass over every group's tensors when they share a device and a full-precision
    dtype; False means "look per group" (something may be wrong, or the groups differ)."""
    tensors = [t for group in groups for t in group]
    first = tensors[0]
    if first.dtype in _LOW_PRECISION or any(t.dtype != first.dtype or t.device != first.device
                                            for t in tensors):
        return False
    return bool(torch.isfinite(torch.stack(_foreach_norm(tensors, False))).all())


def any_nonfinite(groups: Sequence[Sequence[Tensor]]) -> list[bool]:
    """For each group of tensors, whether any entry is NaN or Inf.

    The hot path: one fused norm pass per group and ONE host sync for all groups together.
    A norm can overflow for finite values (e.g. gradients multiplied by a large AMP loss scale),
    so a group flagged by its norms is confirmed entry by entry; that costs more, but only
    happens when something already looks wrong.
    """
    device = next((t.device for group in groups for t in group), torch.device('cpu'))
    checked = [i for i, group in enumerate(groups) if len(group)]
    result = [False] * len(groups)
    if not checked:
        return result
    if len(checked) > 1 and _all_finite_at_once(groups):
        return result  # the normal case: one foreach call for all groups together
    flags = [_group_finite(groups[i], device) for i in checked]
    finite = [bool(flags[0])] if len(flags) == 1 else torch.stack(flags).tolist()
    for i, ok in zip(checked, finite):
        result[i] = not ok and _exactly_nonfinite(groups[i])
    return result


def nonfinite_counts(tensors: Sequence[Tensor]) -> list[tuple[int, int, int]]:
    """``(nan, +inf, -inf)`` entry counts per tensor. Diagnostic path: syncs once per device."""
    counts: list[tuple[int, int, int] | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for index, tensor in enumerate(tensors):
        by_device.setdefault(tensor.device, []).append(index)
    for indices in by_device.values():
        rows = torch.stack([
            torch.stack([
                torch.isnan(tensors[i]).sum(),
                torch.isposinf(tensors[i]).sum(),
                torch.isneginf(tensors[i]).sum()
            ]) for i in indices
        ])
        for i, row in zip(indices, rows.tolist()):
            counts[i] = (int(row[0]), int(row[1]), int(row[2]))
    return counts  # type: ignore[return-value]


def norms_by_prefix(names: Sequence[str], tensors: Sequence[Tensor]) -> dict[str, dict]:
    """Gradient norm per top-level module (first component of the parameter name).

    For each prefix: ``norm`` over all its tensors (non-finite if any is), ``finite_norm`` over
    its finite tensors only, and ``nonfinite_tensors``, the number of tensors with NaN/Inf.
    """
    norms = [float(n) for n in torch.stack(
        [n.float().cpu() for n in tensor_norms(tensors)]).tolist()] if tensors else []
    grouped: dict[str, list[float]] = {}
    for name, norm in zip(names, norms):
        grouped.setdefault(name.split('.', 1)[0], []).append(norm)
    out = {}
    for prefix, values in grouped.items():
        finite = [v for v in values if math.isfinite(v)]
        total = sum(v * v for v in values)
        out[prefix] = dict(
            norm=json_number(total**0.5 if not math.isnan(total) else total),
            finite_norm=json_number(sum(v * v for v in finite)**0.5),
            nonfinite_tensors=len(values) - len(finite),
            tensors=len(values))
    return out


def zero_nonfinite_(tensors: Sequence[Tensor]) -> int:
    """Set the NaN/Inf entries of ``tensors`` to 0 in place; returns how many there were."""
    if not tensors:
        return 0
    replaced = torch.stack([(~torch.isfinite(t)).sum() for t in tensors]).sum()
    for tensor in tensors:
        torch.nan_to_num_(tensor, nan=0.0, posinf=0.0, neginf=0.0)
    return int(replaced)
