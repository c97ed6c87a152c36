"""Which samples were in a batch: metainfo pulled out of a collated data batch for the report.

MMDetection batches are ``dict(inputs=[...], data_samples=[DetDataSample, ...])`` whose samples
carry ``img_path``, ``img_id``, shapes, flips... Plain MMEngine batches may be dicts of lists
(``default_collate``) or lists of dicts (``pseudo_collate``). Everything is converted to JSON
values; anything large (images, boxes) is left out, because the report must stay readable.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from focal_plugin.jsonio import json_number

__all__ = ['batch_metainfo', 'to_json_value']

# Keys that identify a sample; listed first in each record when present.
_IDENTIFYING_KEYS = ('img_path', 'img_id', 'sample_idx', 'file_name', 'filename', 'ori_filename')
# Batch-dict keys that hold per-sample metainfo in common collate layouts.
_METAINFO_KEYS = ('data_samples', 'data_sample', 'metainfo', 'img_metas', 'meta')
_MAX_ELEMENTS = 16
_MAX_STRING = 300
_TOO_BIG = object()  # marks values left out of the report (None is a legitimate value)


def to_json_value(value: Any) -> Any:
    """A small JSON-compatible version of ``value``, or ``_TOO_BIG`` if it is too big (or too
    exotic) to be useful in a report."""
    if isinstance(value, (str, bytes)):
        text = value.decode(errors='replace') if isinstance(value, bytes) else value
        return text if len(text) <= _MAX_STRING else text[:_MAX_STRING] + '...'
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, (torch.Tensor, np.ndarray)):
        count = value.size if isinstance(value, np.ndarray) else value.numel()
        if count > _MAX_ELEMENTS:
            return _TOO_BIG
        return to_json_value(value.tolist())
    if isinstance(value, Mapping):
        out = {str(k): to_json_value(v) for k, v in list(value.items())[:_MAX_ELEMENTS]}
        return {k: v for k, v in out.items() if v is not _TOO_BIG}
    if isinstance(value, Sequence):
        if len(value) > _MAX_ELEMENTS:
            return _TOO_BIG
        items = [to_json_value(v) for v in value]
        return _TOO_BIG if any(v is _TOO_BIG for v in items) else items
    return _TOO_BIG


def _sample_metainfo(sample: Any) -> dict | None:
    metainfo = getattr(sample, 'metainfo', None)  # mmengine BaseDataElement
    if metainfo is None and isinstance(sample, Mapping):
        metainfo = sample
    if not isinstance(metainfo, Mapping):
        return None
    record = {}
    ordered = [k for k in _IDENTIFYING_KEYS if k in metainfo]
    ordered += [k for k in metainfo if k not in _IDENTIFYING_KEYS]
    for key in ordered:
        value = to_json_value(metainfo[key])
        if value is not _TOO_BIG:
            record[str(key)] = value
    return record or None


def _transpose_dict_of_lists(batch: Mapping) -> list[dict] | None:
    """``{'img_path': [a, b], ...}`` (what ``default_collate`` makes) -> per-sample dicts."""
    lengths = {len(v) for v in batch.values() if isinstance(v, (list, tuple))}
    if len(lengths) != 1:
        return None
    size = lengths.pop()
    return [{k: v[i] for k, v in batch.items() if isinstance(v, (list, tuple))}
            for i in range(size)]


def batch_metainfo(data_batch: Any, max_samples: int = 64) -> list[dict]:
    """Per-sample metainfo of ``data_batch`` (empty list when the batch carries none)."""
    candidates: Any = None
    if isinstance(data_batch, Mapping):
        for key in _METAINFO_KEYS:
            if key in data_batch:
                candidates = data_batch[key]
                break
    elif isinstance(data_batch, Sequence) and not isinstance(data_batch, (str, bytes)):
        # pseudo_collate of plain dicts: a list of per-sample dicts
        candidates = [
            item.get('data_samples', item.get('metainfo'))
            if isinstance(item, Mapping) else item for item in data_batch
        ]
    if isinstance(candidates, Mapping):
        candidates = _transpose_dict_of_lists(candidates) or [candidates]
    if not isinstance(candidates, Sequence) or isinstance(candidates, (str, bytes)):
        return []
    records = []
    for sample in list(candidates)[:max_samples]:
        record = _sample_metainfo(sample)
        if record:
            records.append(record)
    return records
