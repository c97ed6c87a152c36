"""Per-element ``weight`` shapes of the mmdet-contract losses (focal, QFL, VFL), generated.

Each drawn case takes a loss module, a batch ``(N, C)``, a weight shape and a reduction, and
checks the meaning: an accepted shape gives the loss of the unweighted element-wise loss times
the weight as that shape means it (per element, per sample, per class, flattened), with the
gradient to a weight that requires grad; a refused shape is a ValueError naming ``weight`` (a
weight with the loss's number of elements in another order, e.g. ``(C, N)``, is never
reshaped). Where mmdet is installed, ``test_same_values_as_mmdet`` runs mmdet's own modules on
every shape they accept with that meaning, and checks that the ones we refuse are the ones
README's drop-in section lists.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from focal_plugin.losses import StableFocalLoss, StableQualityFocalLoss, StableVarifocalLoss

BOUNDED = settings(derandomize=True, database=None, deadline=None, max_examples=80,
                   suppress_health_check=[HealthCheck.too_slow])

# weight shape kinds; 'meaning' maps the drawn weight onto the (N, C) element-wise loss
ACCEPTED = {
    'same': lambda n, c: (n, c),
    'per_sample': lambda n, c: (n,),
    'per_sample_column': lambda n, c: (n, 1),
    'per_class_row': lambda n, c: (1, c),
    'flattened': lambda n, c: (n * c,),
    'flattened_column': lambda n, c: (n * c, 1),
    'scalar': lambda n, c: (),
    'one_by_one': lambda n, c: (1, 1),
    'flattened_row': lambda n, c: (1, n * c),
}
REFUSED = {
    'transposed': lambda n, c: (c, n),           # an (N, C) weight transposed by mistake
    'per_class_vector': lambda n, c: (c,),       # per class as 1-D: per sample when N == C
    'too_long': lambda n, c: (n + 1,),
    'wrong_columns': lambda n, c: (n, c + 1),
}
# QFL sums over classes first: its loss is (N,), so only per-sample shapes mean anything
QFL_ACCEPTED = ('per_sample', 'per_sample_column', 'scalar', 'one_by_one')


def make_loss(name):
    return {'focal': StableFocalLoss(gamma=0.5), 'vfl': StableVarifocalLoss(gamma=0.5),
            'qfl': StableQualityFocalLoss(beta=0.5)}[name]


def inputs(name, n, c, seed):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, c, generator=g, dtype=torch.float64) * 4
    if name == 'focal':
        target = torch.randint(0, c + 1, (n,), generator=g)
    elif name == 'vfl':
        target = torch.rand(n, c, generator=g, dtype=torch.float64)
        target = target * (target > 0.6)
    else:
        target = (torch.randint(0, c + 1, (n,), generator=g),
                  torch.rand(n, generator=g, dtype=torch.float64))
    return pred, target


def meant(kind, weight, n, c, loss_ndim):
    """The weight as the element-wise loss sees it: what the shape means."""
    if kind in ('same', 'per_class_row', 'one_by_one', 'per_sample_column', 'scalar'):
        w = weight
    elif kind == 'per_sample':
        w = weight.view(n, 1)
    else:  # flattened
        w = weight.reshape(n, c)
    if loss_ndim == 1:  # QFL: per sample
        w = w.reshape(-1) if w.numel() > 1 else w.reshape(())
    return w


NAMES = st.sampled_from(['focal', 'vfl', 'qfl'])
SIZES = st.integers(1, 5)
REDUCTIONS = st.sampled_from(['mean', 'sum', 'none'])


@BOUNDED
@given(name=NAMES, n=SIZES, c=SIZES, kind=st.sampled_from(sorted(ACCEPTED)),
       reduction=REDUCTIONS, avg=st.booleans(), seed=st.integers(0, 3))
def test_accepted_weight_shapes_mean_what_they_say(name, n, c, kind, reduction, avg, seed):
    check_weight(name, n, c, kind, reduction, avg, seed)


@BOUNDED
@given(name=NAMES, n=SIZES, c=SIZES, kind=st.sampled_from(sorted(REFUSED)),
       reduction=REDUCTIONS, avg=st.booleans(), seed=st.integers(0, 3))
def test_refused_weight_shapes_raise_naming_weight(name, n, c, kind, reduction, avg, seed):
    check_weight(name, n, c, kind, reduction, avg, seed)


def check_weight(name, n, c, kind, reduction, avg, seed):
    accepted = kind in (QFL_ACCEPTED if name == 'qfl' else ACCEPTED)
    shape = (ACCEPTED if kind in ACCEPTED else REFUSED)[kind](n, c)
    if not accepted:
        # a refused shape must not coincide with an accepted one (N == C, N == 1, C == 1)
        assume(n != c and n > 1 and c > 1)
    loss_fn = make_loss(name)
    pred, target = inputs(name, n, c, seed)
    weight = torch.rand(shape, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    kwargs = dict(avg_factor=7.0) if avg and reduction == 'mean' else {}
    if not accepted:
        with pytest.raises(ValueError, match='weight'):
            loss_fn(pred, target, weight, reduction_override=reduction, **kwargs)
        return
    elementwise = loss_fn(pred, target, reduction_override='none').detach()
    expected = elementwise * meant(kind, weight, n, c, elementwise.ndim)
    assert expected.shape == elementwise.shape  # (a weight never grows the loss)
    if reduction == 'sum':
        expected = expected.sum()
    elif reduction == 'mean':
        expected = expected.sum() / (7.0 + torch.finfo(torch.float32).eps) if kwargs \
            else expected.mean()
    got = loss_fn(pred, target, weight, reduction_override=reduction, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15)
    # the weight is differentiable (a learned re-weighting): same gradient as the reference
    (got_grad,) = torch.autograd.grad(got.sum(), weight)
    (ref_grad,) = torch.autograd.grad(expected.sum(), weight)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-12, atol=1e-15)


# ---- mmdet's own modules -----------------------------------------------------------------------

# what mmdet 3.3 accepts (its FocalLoss views a weight whose first dim is N as (N, 1) and any
# other with N * C elements as (N, C); VarifocalLoss and QualityFocalLoss broadcast)
MMDET_ACCEPTS = {
    'focal': ('same', 'per_sample', 'per_sample_column', 'flattened', 'flattened_column',
              'flattened_row', 'transposed'),
    'vfl': ('same', 'per_sample_column', 'per_class_row', 'scalar', 'one_by_one',
            'per_class_vector'),
    'qfl': ('per_sample', 'scalar'),
}
# accepted by mmdet, refused here (README's drop-in section lists each, with why)
REFUSED_ON_PURPOSE = {('focal', 'transposed'), ('vfl', 'per_class_vector')}


@pytest.mark.parametrize('name', ['focal', 'vfl', 'qfl'])
def test_same_values_as_mmdet(name):
    pytest.importorskip('mmdet')
    from mmdet.models.losses import FocalLoss, QualityFocalLoss, VarifocalLoss
    theirs = {'focal': FocalLoss(gamma=0.5), 'vfl': VarifocalLoss(gamma=0.5),
              'qfl': QualityFocalLoss(beta=0.5)}[name]
    ours = make_loss(name)
    n, c = 6, 4
    pred, target = inputs(name, n, c, seed=0)
    # float32 throughout: mmdet's QFL mixes dtypes in float64
    pred = pred.float()
    target = (target[0], target[1].float()) if name == 'qfl' else target
    target = target.float() if name == 'vfl' else target
    for kind in MMDET_ACCEPTS[name]:
        shape = (ACCEPTED if kind in ACCEPTED else REFUSED)[kind](n, c)
        weight = torch.rand(shape)
        expected = theirs(pred, target, weight)
        if (name, kind) in REFUSED_ON_PURPOSE:
            with pytest.raises(ValueError, match='weight'):
                ours(pred, target, weight)
            continue
        torch.testing.assert_close(ours(pred, target, weight), expected, rtol=2e-5, atol=1e-7,
                                   msg=f'{name} {kind} {shape}')
