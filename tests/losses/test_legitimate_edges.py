"""The legitimate edges, for every loss (issue 29): an empty batch (zero anchors, zero
images), everything ignored, no positives, a single element, float16/bfloat16, non-contiguous
inputs and inference under ``torch.no_grad``: finite, and equal to an independent reference
(``tests/reference.py``: 50-digit formulas and a port of the Unified Focal Loss authors'
code), or to 0 where there is nothing to average.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
from reference import (
    authors_focal,
    authors_focal_tversky,
    authors_unified_focal,
    focal_elem,
    keras_binary_inputs,
    map_elements,
    quality_elem,
    softmax_focal_row,
    varifocal_elem,
)

import focal_plugin  # noqa: F401
from focal_plugin.functional import (
    asymmetric_focal_loss,
    focal_tversky_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
    unified_focal_loss,
    varifocal_loss,
)
from focal_plugin.losses import (
    StableAsymmetricFocalLoss,
    StableFocalLoss,
    StableFocalTverskyLoss,
    StableQualityFocalLoss,
    StableSoftmaxFocalLoss,
    StableVarifocalLoss,
    UnifiedFocalLoss,
)

torch.set_num_threads(1)
C = 3


@dataclass
class Loss:
    name: str
    call: Callable          # (x, t) -> scalar loss
    batch: Callable         # (n, positives: bool, gen) -> (x, t); n = anchors or images
    ref: Callable           # (x, t) -> float64 reference of the scalar loss
    ignore: Optional[Callable] = None  # t -> t with every element ignored


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _det_labels(n, positives, g):
    return torch.randint(0, C + 1, (n,), generator=g) if positives else torch.full((n,), C)


def _onehot(labels):
    return (labels[:, None] == torch.arange(C)).float()


def det_dense(n, positives, g, scores=False):
    x = torch.randn(n, C, generator=g) * 4
    t = _onehot(_det_labels(n, positives, g))
    return x, t * torch.rand(n, C, generator=g).clamp(min=0.05) if scores else t


def det_index(n, positives, g):
    return torch.randn(n, C, generator=g) * 4, _det_labels(n, positives, g)


def det_tuple(n, positives, g):
    labels = _det_labels(n, positives, g)
    return torch.randn(n, C, generator=g) * 4, (labels, torch.rand(n, generator=g))


def cls_index(n, positives, g):
    """Softmax classes; 'no positives' = every element is class 0 (the background)."""
    labels = torch.randint(0, C, (n,), generator=g) if positives else torch.zeros(n).long()
    return torch.randn(n, C, generator=g) * 4, labels


def seg(n, positives, g):
    x = torch.randn(n, 1, 4, 4, generator=g) * 4
    t = (torch.rand(n, 4, 4, generator=g) < 0.4).long() if positives else \
        torch.zeros(n, 4, 4).long()
    return x, t


def _mean(fn, x, t, *args):
    if x.numel() == 0:
        return 0.0
    return map_elements(fn, x.double(), t.double(), *args)[0].mean().item()


def ref_softmax(x, t):
    rows = [softmax_focal_row(x[i].tolist(), int(t[i]), 2.0)[0] for i in range(len(t))]
    return sum(rows) / max(len(rows), 1)


def _ref_index_focal(x, labels):
    return _mean(focal_elem, x, _onehot(labels), 2.0, 0.25)


def _ref_qfl_tuple(x, target):
    labels, scores = target
    dense = _onehot(labels) * scores[:, None]
    return C * _mean(quality_elem, x, dense, 2.0)  # summed over classes, mean over anchors


def _authors(fn, *args):
    def ref(x, t):
        if x.shape[0] == 0:
            return 0.0
        return float(fn(*keras_binary_inputs(x.double(), t), *args))
    return ref


def _all_ignored(value):
    return lambda t: torch.full_like(t, value)


LOSSES = [
    Loss('sigmoid_focal_loss', lambda x, t: sigmoid_focal_loss(x, t, reduction='mean'),
         det_dense, lambda x, t: _mean(focal_elem, x, t, 2.0, 0.25)),
    Loss('quality_focal_loss', lambda x, t: quality_focal_loss(x, t, reduction='mean'),
         lambda n, p, g: det_dense(n, p, g, scores=True),
         lambda x, t: _mean(quality_elem, x, t, 2.0)),
    Loss('varifocal_loss', lambda x, t: varifocal_loss(x, t, reduction='mean'),
         lambda n, p, g: det_dense(n, p, g, scores=True),
         lambda x, t: _mean(varifocal_elem, x, t, 0.75, 2.0, True)),
    Loss('softmax_focal_loss', softmax_focal_loss, cls_index, ref_softmax,
         _all_ignored(-100)),
    Loss('unified_focal_loss', unified_focal_loss, seg, _authors(authors_unified_focal),
         _all_ignored(255)),
    Loss('asymmetric_focal_loss', asymmetric_focal_loss, seg,
         _authors(authors_focal, 0.6, 0.5, False), _all_ignored(255)),
    Loss('focal_tversky_loss', focal_tversky_loss, seg,
         _authors(authors_focal_tversky, 0.6, 0.5, False), _all_ignored(255)),
    Loss('StableFocalLoss', StableFocalLoss(), det_index, _ref_index_focal),
    Loss('StableQualityFocalLoss', StableQualityFocalLoss(), det_tuple, _ref_qfl_tuple),
    Loss('StableVarifocalLoss', StableVarifocalLoss(),
         lambda n, p, g: det_dense(n, p, g, scores=True),
         lambda x, t: _mean(varifocal_elem, x, t, 0.75, 2.0, True)),
    Loss('StableSoftmaxFocalLoss', StableSoftmaxFocalLoss(), cls_index, ref_softmax,
         _all_ignored(-100)),
    Loss('UnifiedFocalLoss', UnifiedFocalLoss(), seg, _authors(authors_unified_focal),
         _all_ignored(255)),
    Loss('StableAsymmetricFocalLoss', StableAsymmetricFocalLoss(), seg,
         _authors(authors_focal, 0.6, 0.5, False), _all_ignored(255)),
    Loss('StableFocalTverskyLoss', StableFocalTverskyLoss(), seg,
         _authors(authors_focal_tversky, 0.6, 0.5, False), _all_ignored(255)),
]
IDS = [loss.name for loss in LOSSES]


def _loss_and_grad(loss, x, t):
    x = x.detach().requires_grad_(True)
    out = loss.call(x, t)
    out.backward()
    return out, x.grad


def _assert_reference(loss, out, x, t, rtol=1e-5):
    want = loss.ref(x, t)
    assert out.item() == pytest.approx(want, rel=rtol, abs=1e-7), (out.item(), want)


@pytest.mark.parametrize('loss', LOSSES, ids=IDS)
def test_empty_batch_is_zero_with_zero_gradient(loss):
    """Zero anchors / zero images (instance-level use: no RoI is positive)."""
    x, t = loss.batch(0, True, _gen())
    out, grad = _loss_and_grad(loss, x, t)
    assert out.item() == 0 and grad.shape == x.shape and torch.isfinite(out)


@pytest.mark.parametrize('loss', [loss for loss in LOSSES if loss.ignore],
                         ids=[loss.name for loss in LOSSES if loss.ignore])
def test_everything_ignored_is_zero_with_zero_gradient(loss):
    x, t = loss.batch(4, True, _gen())
    out, grad = _loss_and_grad(loss, x, loss.ignore(t))
    assert out.item() == 0 and torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize('n, positives, seed', [(5, False, 1), (1, True, 2)],
                         ids=['no positives', 'a single element'])
@pytest.mark.parametrize('loss', LOSSES, ids=IDS)
def test_no_positives_and_a_single_element_equal_the_reference(loss, n, positives, seed):
    x, t = loss.batch(n, positives, _gen(seed))
    out, grad = _loss_and_grad(loss, x, t)
    assert torch.isfinite(grad).all()
    _assert_reference(loss, out, x, t)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize('loss', LOSSES, ids=IDS)
def test_half_precision_equals_the_reference_of_its_values(loss, dtype):
    """16-bit logits are computed in float32: the loss equals the reference evaluated at the
    16-bit values, to float32 precision."""
    x, t = loss.batch(6, True, _gen(3))
    x = x.to(dtype)
    out, grad = _loss_and_grad(loss, x, t)
    assert torch.isfinite(grad.float()).all() and grad.dtype == dtype
    _assert_reference(loss, out, x.float(), t)


@pytest.mark.parametrize('loss', LOSSES, ids=IDS)
def test_non_contiguous_inputs_give_the_same_loss(loss):
    x, t = loss.batch(6, True, _gen(4))
    wide = torch.cat([x, x], dim=-1)[..., :x.shape[-1]]  # same values, strided
    assert not wide.is_contiguous()
    torch.testing.assert_close(loss.call(wide, t), loss.call(x, t), rtol=1e-6, atol=0)
    _assert_reference(loss, loss.call(wide, t), x, t)


@pytest.mark.parametrize('loss', LOSSES, ids=IDS)
def test_inference_under_no_grad_equals_training(loss):
    x, t = loss.batch(6, True, _gen(5))
    with torch.no_grad():
        inference = loss.call(x, t)
    assert not inference.requires_grad
    torch.testing.assert_close(inference, loss.call(x.requires_grad_(True), t), rtol=0, atol=0)
