"""Property tests: the focal losses on logits (sigmoid focal, QFL, VFL) with respect to every
differentiable input, in every autograd mode, against the float64 mpmath references.

Drawn (hypothesis, derandomized and bounded: the same cases on every run, well under a minute):
shapes; float64/float32; logits from the hard points (0, +-1, +-20, +-100, +-1e4) and ordinary
values; targets as bool labels, float 0/1 labels or soft values with exact 0s and 1s, with and
without ``requires_grad``; focusing exponents from 0 to 5 (0.01 included); reductions; the
fused backends ('eager': the kernels as they are; 'off': the autograd reference, which hands
targets that need a gradient to the kernels); and the autograd modes ``backward``,
``retain_graph`` (a second backward adds the same gradient), ``create_graph`` (the gradient is
itself differentiable, finitely), ``torch.func.grad`` and ``torch.func.vmap`` over samples.

Checked: the loss and the gradients to the logits and to the targets equal the references
(``tests/reference.py``; their derivatives are checked against mpmath's numerical ones in
``test_reference_self_check.py``) within the stated tolerance, finite wherever the reference
is; a target that requires grad always receives a gradient (never dropped from the graph).
The compiled backend runs the same kernels (``test_fused.py`` compares it with 'eager');
``test_compiled_target_kernels_match_eager`` below covers the kernels added for target grads.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import (
    focal_elem,
    focal_target_grad,
    map_elements,
    quality_elem,
    quality_target_grad,
    varifocal_elem,
    varifocal_target_grad,
)

from focal_plugin.functional import (
    fused,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)

# Derandomized and bounded: every run draws the same cases; no example database, no deadline
# (the first call of a kernel or mode pays one-time costs).
BOUNDED = settings(derandomize=True, database=None, deadline=None, max_examples=40,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HARD_POINTS = [0.0, 1.0, -1.0, 20.0, -20.0, 100.0, -100.0, 1e4, -1e4]
LOSSES = ('focal', 'quality', 'vfl')
MODES = ('backward', 'retain_graph', 'create_graph', 'func_grad', 'vmap')
# Tolerances against the 50-digit references: float64 to 1e-9 relative; float32 to 2e-5,
# except where the BCE itself is subnormal in float32 (|x| > 87: ~4% granularity there, a
# term that is then at most a fraction g / |x| of the gradient), 2e-3.
# 16-bit inputs are computed in float32 and their gradients rounded back to 16 bits: the
# rounding of the result (bfloat16: 2^-8) and float16's smallest normal (6e-5) bound the error.
RTOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
RTOL_SUBNORMAL = 2e-3
ATOL = {torch.float64: 1e-30, torch.float32: 1e-30, torch.float16: 1e-7,
        torch.bfloat16: 1e-30}


@pytest.fixture
def eager_kernels():
    """The fused kernels uncompiled (the compiled ones are compared with them in test_fused):
    no compilation inside a test that is about something else."""
    before = fused.get_fused_backend()
    fused.set_fused_backend('eager')
    yield
    fused.set_fused_backend(before)


@st.composite
def cases(draw, modes=MODES, target_grad=(False, True)):
    """One drawn call: loss, inputs, parameters, backend, autograd mode (from ``modes``) and
    whether the targets require grad (from ``target_grad``; bool targets never do)."""
    loss = draw(st.sampled_from(LOSSES))
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    n = rows * cols
    logits = draw(st.lists(st.one_of(st.sampled_from(HARD_POINTS),
                                     st.floats(-30, 30, allow_subnormal=False)),
                            min_size=n, max_size=n))
    kinds = ('bool', 'float01', 'soft') if False in target_grad else ('float01', 'soft')
    kind = draw(st.sampled_from(kinds))
    if kind == 'soft':
        values = draw(st.lists(st.one_of(st.sampled_from([0.0, 1.0]),
                                         st.floats(0, 1, allow_subnormal=False)),
                               min_size=n, max_size=n))
    else:
        values = [float(v) for v in draw(st.lists(st.booleans(), min_size=n, max_size=n))]
    exponent = draw(st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.0, 5.0]))
    if loss == 'quality' and exponent == 0:  # beta 0 is plain BCE: covered, but keep it rare
        exponent = draw(st.sampled_from([0.0, 0.5]))
    return dict(
        loss=loss, shape=(rows, cols), logits=logits, kind=kind, targets=values,
        target_grad=kind != 'bool' and draw(st.sampled_from(target_grad)),
        exponent=exponent,
        alpha=draw(st.sampled_from([0.25, None, 1.0])) if loss == 'focal' else 0.75,
        iou_weighted=draw(st.booleans()),
        dtype=draw(st.sampled_from([torch.float64, torch.float32, torch.float16,
                                    torch.bfloat16])),
        reduction=draw(st.sampled_from(['none', 'sum', 'mean'])),
        backend=draw(st.sampled_from(['eager', 'off'])),
        mode=draw(st.sampled_from(modes)))


def loss_fn(case):
    name, g = case['loss'], case['exponent']
    if name == 'focal':
        return lambda x, t, red: sigmoid_focal_loss(x, t, case['alpha'], g, red)
    if name == 'quality':
        return lambda x, t, red: quality_focal_loss(x, t, g, red)
    return lambda x, t, red: varifocal_loss(x, t, 0.75, g, case['iou_weighted'], red)


def references(case, x, t):
    """float64 (loss, d/dx, d/dt) of the element-wise loss at the values x and t hold."""
    name, g = case['loss'], case['exponent']
    if name == 'focal':
        loss, grad, _ = map_elements(focal_elem, x, t, g, case['alpha'])
        (grad_t,) = map_elements(focal_target_grad, x, t, g, case['alpha'])
    elif name == 'quality':
        loss, grad = map_elements(quality_elem, x, t, g)
        (grad_t,) = map_elements(quality_target_grad, x, t, g)
    else:
        args = (0.75, g, case['iou_weighted'])
        loss, grad = map_elements(varifocal_elem, x, t, *args)
        (grad_t,) = map_elements(varifocal_target_grad, x, t, *args)
    return loss, grad, grad_t


def well_conditioned(case, x, t):
    """Elements whose float reference is meaningful: QFL with beta < 1 has an infinite slope at
    its cusp sigma(x) == y, so elements within 1e-2 of it are left out (as in test_fused)."""
    keep = torch.ones_like(x, dtype=torch.bool)
    if case['loss'] == 'quality' and 0 < case['exponent'] < 1:
        keep &= (t.double() - torch.sigmoid(x.double())).abs() > 1e-2
    return keep


def assert_matches(got, ref, x, case, what):
    got = got.detach().double()
    assert torch.isfinite(got).all(), f'{what} not finite where the reference is: {got}'
    dtype = case['dtype']
    rtol = torch.full_like(x, RTOL[dtype])
    if dtype != torch.float64:  # (computed in float32)
        rtol = rtol.clamp(min=torch.where(x.abs() > 87, RTOL_SUBNORMAL, 0.0))
    if dtype == torch.bfloat16 and what == 'loss':  # the loss is float32
        rtol = rtol.clamp(max=RTOL_SUBNORMAL)
    keep = well_conditioned(case, x, case['t_values'])
    err = (got - ref).abs()
    ok = (err <= rtol * ref.abs() + ATOL[dtype]) | ~keep
    assert ok.all(), (f'{what}: got {got[~ok].tolist()}, reference {ref[~ok].tolist()} at '
                      f'x={x[~ok].tolist()} t={case["t_values"][~ok].tolist()} ({case})')


def make_inputs(case):
    dtype = case['dtype']
    x = torch.tensor(case['logits'], dtype=torch.float64).view(case['shape']).to(dtype)
    t = torch.tensor(case['targets'], dtype=torch.float64).view(case['shape']).to(dtype)
    if case['kind'] == 'bool':
        t = t.bool()
    case['t_values'] = t.double()
    return x, t


def gradients(case, fn, x, t):
    """(loss, d S/dx, d S/dt or None) of S = the loss summed (reduction 'none'/'sum') or
    averaged ('mean'), in the case's autograd mode."""
    red, mode = case['reduction'], case['mode']
    want_t = case['target_grad']
    argnums = (0, 1) if want_t else (0,)

    def total(xv, tv):
        out = fn(xv, tv, red)
        return out.sum() if red == 'none' else out

    if mode in ('func_grad', 'vmap'):
        loss = fn(x, t, 'none')  # values under the transform below
        if mode == 'func_grad':
            grads = torch.func.grad(total, argnums=argnums)(x, t)
        else:  # per-sample gradients of each row's total, stacked: rows are independent
            per_row = torch.func.vmap(torch.func.grad(lambda xr, tr: fn(xr, tr, 'sum'),
                                                      argnums=argnums))(x, t)
            scale = 1.0 / x.numel() if red == 'mean' else 1.0
            grads = tuple(g * scale for g in per_row)
        return loss, grads[0], grads[1] if want_t else None
    x = x.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True) if want_t else t
    loss = fn(x, t, 'none')
    inputs = (x, t) if want_t else (x,)
    if mode == 'backward':
        total(x, t).backward()
        grads = (x.grad, t.grad if want_t else None)
        if want_t:
            assert t.grad is not None, 'a target that requires grad was dropped from the graph'
        return loss, grads[0], grads[1]
    if mode == 'retain_graph':
        out = total(x, t)
        first = torch.autograd.grad(out, inputs, retain_graph=True)
        second = torch.autograd.grad(out, inputs)
        for a, b in zip(first, second):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        return loss, first[0], first[1] if want_t else None
    # create_graph: the gradient is a differentiable function; its own gradient is finite
    grads = torch.autograd.grad(total(x, t), inputs, create_graph=True)
    (second,) = torch.autograd.grad(grads[0].sum(), x, allow_unused=True)
    if second is not None:
        keep = x.abs() < 87  # (float32's exp range: beyond it second-order terms underflow)
        assert torch.isfinite(second[keep]).all(), f'second derivative not finite: {second}'
    return loss, grads[0], grads[1] if want_t else None


AUTOGRAD = ('backward', 'retain_graph', 'create_graph')


@BOUNDED
@given(case=cases(modes=AUTOGRAD, target_grad=(False,)))
def test_logit_gradients_match_the_reference(case):
    check_case(case)


@BOUNDED
@given(case=cases(modes=AUTOGRAD, target_grad=(True,)))
def test_target_gradients_match_the_reference(case):
    """Soft targets with exact 0s and 1s, float 0/1 labels, scores: all require grad."""
    check_case(case)


@BOUNDED
@given(case=cases(modes=('func_grad', 'vmap')))
def test_torch_func_transforms_match_the_reference(case):
    check_case(case)


def check_case(case):
    before = fused.get_fused_backend()
    fused.set_fused_backend(case['backend'])
    try:
        x, t = make_inputs(case)
        loss, grad_x, grad_t = gradients(case, loss_fn(case), x, t)
    finally:
        fused.set_fused_backend(before)
    ref_loss, ref_grad, ref_grad_t = references(case, x, t.double())
    scale = 1.0 / x.numel() if case['reduction'] == 'mean' else 1.0
    xd = x.double()
    assert_matches(loss, ref_loss, xd, case, 'loss')
    assert_matches(grad_x, ref_grad * scale, xd, case, 'd/dx')
    if case['target_grad']:
        assert grad_t is not None, 'a target that requires grad got no gradient'
        assert_matches(grad_t, ref_grad_t * scale, xd, case, 'd/dtarget')


# ---- activated=True: probabilities, not logits ------------------------------------------------

@BOUNDED
@given(values=st.lists(st.floats(-3, 3, allow_subnormal=False), min_size=1, max_size=12),
       loss=st.sampled_from(['focal', 'quality']), mode=st.sampled_from(['immediate',
                                                                          'deferred']))
def test_activated_inputs_outside_0_1_name_the_argument(values, loss, mode):
    from focal_plugin.functional import flush_value_checks, set_value_check_mode
    probs = torch.tensor(values, dtype=torch.float64)
    targets = torch.full_like(probs, 0.5)
    fn = (lambda: sigmoid_focal_loss(probs, targets, activated=True, gamma=0.5)) \
        if loss == 'focal' else (lambda: quality_focal_loss(probs, targets, activated=True))
    inside = bool(((probs >= 0) & (probs <= 1)).all())
    set_value_check_mode(mode)
    try:
        if inside:
            out = fn()
            flush_value_checks()
            assert torch.isfinite(out).all()
            return
        with pytest.raises(ValueError, match=r'inputs must be probabilities in \[0, 1\] with '
                                             r'activated=True'):
            out = fn()  # deferred: the call returns (no device assert) ...
            assert torch.isfinite(out).all()  # ... computing on in-range stand-ins
            flush_value_checks()  # ... and the error comes at the next check
    finally:
        set_value_check_mode('auto')


def test_activated_inputs_agree_with_logits_inside_0_1(eager_kernels):
    x = torch.linspace(-8, 8, 33, dtype=torch.float64)
    t = torch.rand(33, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for fn in (lambda v, a: sigmoid_focal_loss(v, t, gamma=0.5, activated=a),
               lambda v, a: quality_focal_loss(v, t, beta=0.5, activated=a)):
        torch.testing.assert_close(fn(torch.sigmoid(x), True), fn(x, False), rtol=1e-9, atol=0)


# ---- the examples of issue 35, named ---------------------------------------------------------

def test_learnable_label_smoothing_at_zero_moves(eager_kernels):
    """``(1 - e) * onehot + e / 2`` at e = 0 is all 0/1: the targets must stay in the graph."""
    e = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    onehot = torch.eye(4, dtype=torch.float64)[torch.tensor([0, 1, 2, 3, 0, 1])]
    x = torch.linspace(-3, 3, 24, dtype=torch.float64).view(6, 4)
    targets = (1 - e) * onehot + e / 2
    sigmoid_focal_loss(x, targets, reduction='sum').backward()
    (ref,) = map_elements(focal_target_grad, x, onehot, 2.0, 0.25)
    assert e.grad is not None
    torch.testing.assert_close(e.grad, (ref * (0.5 - onehot)).sum(), rtol=1e-9, atol=0)


@pytest.mark.parametrize('loss', LOSSES)
def test_torch_func_over_targets_and_samples(loss):
    case = dict(loss=loss, exponent=0.5, alpha=0.25, iou_weighted=True)
    fn = loss_fn(case)
    x = torch.linspace(-5, 5, 12, dtype=torch.float64).view(3, 4)
    t = torch.tensor([0.0, 1.0, 0.3, 0.0] * 3, dtype=torch.float64).view(3, 4)
    for backend in ('eager', 'compile', 'off'):
        fused.set_fused_backend(backend)
        try:
            gx, gt = torch.func.grad(lambda a, b: fn(a, b, 'sum'), argnums=(0, 1))(x, t)
            jac = torch.func.jacrev(lambda a: fn(a, t, 'none'))(x)
        finally:
            fused.set_fused_backend('compile')
        _, ref_x, ref_t = references(case, x, t)
        torch.testing.assert_close(gx, ref_x, rtol=1e-9, atol=1e-30)
        torch.testing.assert_close(gt, ref_t, rtol=1e-9, atol=1e-30)
        torch.testing.assert_close(jac.sum(dim=(0, 1)), ref_x, rtol=1e-9, atol=1e-30)


def test_compiled_target_kernels_match_eager():
    """The '*_and_grads' kernels through the default compiled backend (float32)."""
    x = torch.linspace(-30, 30, 64).view(16, 4)
    t = torch.rand(16, 4, generator=torch.Generator().manual_seed(1))
    t[::3] = 0.0
    t[1::5] = 1.0
    for loss in LOSSES:
        fn = loss_fn(dict(loss=loss, exponent=0.5, alpha=0.25, iou_weighted=True))
        results = {}
        for backend in ('compile', 'eager'):
            fused.set_fused_backend(backend)
            try:
                xx, tt = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
                results[backend] = torch.autograd.grad(fn(xx, tt, 'sum'), (xx, tt))
            finally:
                fused.set_fused_backend('compile')
        for a, b in zip(results['compile'], results['eager']):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_half_targets_that_require_grad_get_grad_in_their_dtype():
    x = torch.randn(5, 3).half().requires_grad_(True)
    t = torch.rand(5, 3).half()
    t[0] = 0
    t.requires_grad_(True)
    sigmoid_focal_loss(x, t, gamma=0.5, reduction='sum').backward()
    assert t.grad.dtype == torch.float16 and torch.isfinite(t.grad).all()
    assert not math.isnan(float(t.grad.float().sum()))
