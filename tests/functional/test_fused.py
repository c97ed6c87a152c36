"""The fused 'exact' sigmoid focal loss and QFL (closed-form gradient) against the mpmath
references and against the autograd formulations they replace, for every backend."""

import pytest
import torch
from conftest import GAMMAS, SATURATING_LOGITS
from reference import focal_elem, map_elements, quality_elem, varifocal_elem

from focal_plugin.functional import (
    compile_backend,
    fused,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)
from focal_plugin.functional.fused_kernels import KERNELS

FUSED = ['eager', 'compile']


@pytest.fixture(autouse=True)
def compiled_at_every_size(monkeypatch):
    """Here 'compile' means the compiled kernel at every size (by default small CPU calls run
    the uncompiled kernels: test_compile_backend.py tests that rule)."""
    monkeypatch.setattr(compile_backend, 'CPU_COMPILE_MIN_NUMEL', 0)


@pytest.fixture
def backend(request):
    before = fused.get_fused_backend()
    fused.set_fused_backend(request.param)
    yield request.param
    fused.set_fused_backend(before)


def run(x, t, backend_name, reduction='none', **kw):
    """Loss and d(sum of loss)/dx with the given backend."""
    before = fused.get_fused_backend()
    fused.set_fused_backend(backend_name)
    try:
        x = x.detach().clone().requires_grad_(True)
        loss = sigmoid_focal_loss(x, t, reduction=reduction, **kw)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    finally:
        fused.set_fused_backend(before)
    return loss.detach(), grad


def inputs(dtype, soft):
    x = torch.tensor([v for v in SATURATING_LOGITS if abs(v) <= 30] + [3.3, -7.7, 0.1, -0.3, 15],
                     dtype=torch.float64).repeat(2)
    g = torch.Generator().manual_seed(0)
    t = (torch.rand(x.numel(), generator=g, dtype=torch.float64) if soft
         else (torch.arange(x.numel()) % 2 == 0).double())
    if soft:
        t[:4] = torch.tensor([0.0, 1.0, 0.5, 1.0])  # hard values inside a soft tensor
    # the reference sees exactly the values the dtype can hold
    return x.to(dtype), t.to(dtype)


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('soft', [False, True])
@pytest.mark.parametrize('alpha', [0.25, None])
@pytest.mark.parametrize('gamma', [0.0] + GAMMAS)
def test_matches_mpmath_reference_float32(backend, soft, alpha, gamma):
    x, t = inputs(torch.float32, soft)
    loss, grad = run(x, t, backend, alpha=alpha, gamma=gamma)
    ref_loss, ref_grad, scale = map_elements(focal_elem, x, t, gamma, alpha)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-37)
    # float32 promises a relative error of the gradient's condition scale (where two terms
    # cancel, the result itself can be tiny)
    assert ((grad.double() - ref_grad).abs() <= 1e-5 * scale + 1e-37).all()


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('soft', [False, True])
@pytest.mark.parametrize('gamma', [0.01, 0.5, 2.0])
def test_float64_matches_autograd_reference_tightly(backend, soft, gamma):
    x, t = inputs(torch.float64, soft)
    loss, grad = run(x, t, backend, alpha=0.25, gamma=gamma)
    ref_loss, ref_grad = run(x, t, 'off', alpha=0.25, gamma=gamma)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('soft', [False, True])
@pytest.mark.parametrize('gamma', [0.01, 0.5, 0.9, 2.0])
def test_finite_at_saturated_logits(backend, soft, gamma):
    x = torch.tensor(SATURATING_LOGITS).repeat(2)
    t = (torch.arange(x.numel()) % 2 == 0).float()
    if soft:
        t = t * 0.8 + 0.1
    loss, grad = run(x, t, backend, gamma=gamma)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref_loss, ref_grad = run(x, t, 'off', gamma=gamma)
    torch.testing.assert_close(loss, ref_loss, rtol=2e-6, atol=1e-37)
    torch.testing.assert_close(grad, ref_grad, rtol=2e-5, atol=1e-37)


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_inputs_upcast_and_grad_in_input_dtype(backend, dtype):
    x = torch.tensor([-20.0, -3.0, 0.0, 2.5, 20.0, 60.0], dtype=dtype)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=dtype)
    loss, grad = run(x, t, backend, gamma=0.5)
    ref_loss, ref_grad = run(x, t, 'off', gamma=0.5)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_reduced_losses(backend, reduction):
    """The backward of a reduction receives one value expanded to full size."""
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(1)) * 8
    t = torch.rand(50, 7, generator=torch.Generator().manual_seed(2)) > 0.8
    loss, grad = run(x, t, backend, reduction=reduction, gamma=0.5)
    ref_loss, ref_grad = run(x, t, 'off', reduction=reduction, gamma=0.5)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('soft', [False, True])
def test_autograd_keeps_only_the_local_gradient(backend, soft):
    """Saved for backward: the local gradient (the one new tensor), and the caller's logits and
    targets themselves (no copies: kept for a create_graph backward)."""
    x = torch.randn(64, 9, requires_grad=True)
    t = torch.rand(64, 9) if soft else torch.rand(64, 9) > 0.5
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda v: v):
        loss = sigmoid_focal_loss(x, t, gamma=0.5, reduction='none')
    inputs = (x.data_ptr(), t.data_ptr())
    new = [tensor for tensor in saved if tensor.data_ptr() not in inputs]
    assert len(saved) == 3 and len(new) == 1 and new[0].shape == x.shape
    (grad,) = torch.autograd.grad(loss.sum(), x)
    torch.testing.assert_close(grad, new[0])  # d(sum)/dx is the local gradient itself


@pytest.mark.parametrize('backend', FUSED, indirect=True)
def test_no_grad_runs_the_loss_only_kernel(backend):
    x = torch.randn(40, 3, requires_grad=True)
    t = torch.rand(40, 3) > 0.5
    with torch.no_grad():
        kernel = fused.fused_kernel(x, t)
        assert kernel is compile_backend._COMPILED.get(('hard_loss', torch.float32, 'cpu'), True) \
            if backend == 'compile' else kernel is KERNELS['hard_loss']
        loss = sigmoid_focal_loss(x, t, gamma=0.5)
    ref, _ = run(x.detach(), t, 'off', gamma=0.5)
    torch.testing.assert_close(loss, ref)


def test_backend_dispatch():
    x = torch.randn(4, 3, requires_grad=True)
    hard, soft = x > 0, torch.rand(4, 3)
    before = fused.get_fused_backend()
    fused.set_fused_backend('eager')
    try:
        assert fused.fused_kernel(x, hard) is KERNELS['hard_loss_and_grad']
        assert fused.fused_kernel(x, soft) is KERNELS['soft_loss_and_grad']
        assert fused.fused_kernel(x.detach(), hard) is KERNELS['hard_loss']
        assert fused.fused_kernel(x.half(), hard) is None  # the caller upcasts first
        soft_with_grad = soft.clone().requires_grad_(True)
        assert fused.fused_kernel(x, soft_with_grad) is KERNELS['soft_loss_and_grads']
        fused.set_fused_backend('off')
        assert fused.fused_kernel(x, hard) is None
        # targets that need a gradient: the closed form serves them on every backend (the
        # reference's gradient to an exact 0/1 target is 0 * inf)
        assert fused.fused_kernel(x, soft_with_grad) is KERNELS['soft_loss_and_grads']
        with torch.no_grad():
            assert fused.fused_kernel(x, soft_with_grad) is None
    finally:
        fused.set_fused_backend(before)


def test_grad_through_targets_is_finite_at_exact_0_and_1():
    x = torch.randn(10, requires_grad=True)
    t = torch.rand(10)
    t[:3], t[3:6] = 0.0, 1.0
    t.requires_grad_(True)
    loss = sigmoid_focal_loss(x, t, gamma=0.5, reduction='sum')
    gx, gt = torch.autograd.grad(loss, (x, t))
    assert torch.isfinite(gx).all() and torch.isfinite(gt).all() and gt.abs().sum() > 0


def test_inside_a_compiled_model_the_eager_kernels_are_traced():
    def step(x, t):
        return sigmoid_focal_loss(x * 2, t, gamma=0.5, reduction='sum')

    compiled = torch.compile(step, dynamic=True)
    x = torch.randn(20, 3, requires_grad=True)
    t = torch.rand(20, 3) > 0.6
    (grad,) = torch.autograd.grad(compiled(x, t), x)
    (ref,) = torch.autograd.grad(step(x, t), x)
    torch.testing.assert_close(grad, ref)


def test_empty_input_is_zero_not_nan():
    for name in FUSED:
        loss, grad = run(torch.zeros(0, 80), torch.zeros(0, 80, dtype=torch.bool), name,
                         reduction='mean', gamma=0.5)
        assert loss.item() == 0 and grad.shape == (0, 80)


# ---- QFL -------------------------------------------------------------------------------------

def run_qfl(x, y, backend_name, beta):
    before = fused.get_fused_backend()
    fused.set_fused_backend(backend_name)
    try:
        x = x.detach().clone().requires_grad_(True)
        loss = quality_focal_loss(x, y, beta)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    finally:
        fused.set_fused_backend(before)
    return loss.detach(), grad


def qfl_inputs(dtype):
    x = torch.tensor(SATURATING_LOGITS + [3.3, -7.7, 0.4], dtype=torch.float64).repeat(3)
    n = x.numel() // 3
    y = torch.zeros(x.numel(), dtype=torch.float64)
    y[n:2 * n] = torch.rand(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y[2 * n:] = 1.0
    x, y = x.to(dtype), y.to(dtype)
    y[-1] = torch.sigmoid(x[-1])  # exactly at the cusp sigmoid(x) == y
    return x, y


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('beta', [b for b in GAMMAS])
def test_qfl_matches_mpmath_reference_float32(backend, beta):
    x, y = qfl_inputs(torch.float32)
    keep = x.abs() <= 30  # where float32 can promise relative accuracy
    # not at the cusp: float32 rounds |y - p| ~ 1e-8 to 0 there, and for small beta
    # (1e-8)**beta is far from 0**beta (the autograd formulation rounds the same way)
    keep[-1] = False
    loss, grad = run_qfl(x, y, backend, beta)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref_loss, ref_grad = map_elements(quality_elem, x, y, beta)
    torch.testing.assert_close(loss.double()[keep], ref_loss[keep], rtol=1e-5, atol=1e-30)
    torch.testing.assert_close(grad.double()[keep], ref_grad[keep], rtol=1e-4, atol=1e-7)
    assert grad[-1] == 0  # the cusp


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('beta', [0.01, 0.5, 2.0])
def test_qfl_float64_matches_autograd_reference(backend, beta):
    x, y = qfl_inputs(torch.float64)
    loss, grad = run_qfl(x, y, backend, beta)
    ref_loss, ref_grad = run_qfl(x, y, 'off', beta)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize('backend', FUSED, indirect=True)
def test_qfl_dispatch(backend):
    x = torch.randn(6, 4, requires_grad=True)
    y = torch.rand(6, 4)
    assert fused.fused_kernel(x, y, 'quality') is not None
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        quality_focal_loss(x, y, 0.5)
    new = [t for t in saved if t.data_ptr() not in (x.data_ptr(), y.data_ptr())]
    assert len(saved) == 3 and len(new) == 1  # the local gradient; x and y themselves
    # beta == 0 is plain BCE and stays on the reference path
    loss, _ = run_qfl(x, y, backend, 0.0)
    torch.testing.assert_close(
        loss, torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction='none'))


# ---- VFL -------------------------------------------------------------------------------------

def run_vfl(x, t, backend_name, **kw):
    before = fused.get_fused_backend()
    fused.set_fused_backend(backend_name)
    try:
        x = x.detach().clone().requires_grad_(True)
        loss = varifocal_loss(x, t, **kw)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    finally:
        fused.set_fused_backend(before)
    return loss.detach(), grad


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('iou_weighted', [True, False])
@pytest.mark.parametrize('gamma', [0.01, 0.5, 2.0])
def test_vfl_matches_references(backend, iou_weighted, gamma):
    x64, y64 = qfl_inputs(torch.float64)  # negatives (0), IoU scores, ones
    x, y = x64.float(), y64.float()
    keep = x.abs() <= 30
    loss, grad = run_vfl(x, y, backend, alpha=0.75, gamma=gamma, iou_weighted=iou_weighted)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref_loss, ref_grad = map_elements(varifocal_elem, x, y, 0.75, gamma, iou_weighted)
    torch.testing.assert_close(loss.double()[keep], ref_loss[keep], rtol=1e-5, atol=1e-30)
    torch.testing.assert_close(grad.double()[keep], ref_grad[keep], rtol=1e-4, atol=1e-7)
    loss64, grad64 = run_vfl(x64, y64, backend, alpha=0.75, gamma=gamma,
                             iou_weighted=iou_weighted)
    ref64, refg64 = run_vfl(x64, y64, 'off', alpha=0.75, gamma=gamma, iou_weighted=iou_weighted)
    torch.testing.assert_close(loss64, ref64, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(grad64, refg64, rtol=1e-9, atol=1e-15)  # p - t at p == t


@pytest.mark.parametrize('backend', FUSED, indirect=True)
def test_second_backward_accumulates_the_same_gradient(backend):
    """retain_graph=True works as with the reference: the local gradient is not consumed."""
    x = torch.randn(8, 3, requires_grad=True)
    loss = sigmoid_focal_loss(x, x.detach() > 0, gamma=0.5, reduction='sum')
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    ref, ref_grad = run(x.detach(), x.detach() > 0, 'off', reduction='sum', gamma=0.5)
    torch.testing.assert_close(first, ref_grad)
    torch.testing.assert_close(x.grad, 2 * first)


@pytest.mark.parametrize('backend', FUSED, indirect=True)
@pytest.mark.parametrize('reduction', ['sum', 'mean'])
@pytest.mark.parametrize('loss_fn, kwargs', [
    (quality_focal_loss, dict(beta=0.5)),
    (varifocal_loss, dict(alpha=0.75, gamma=0.5, iou_weighted=True)),
])
def test_qfl_vfl_reduced_in_the_kernel(backend, reduction, loss_fn, kwargs):
    x, y = qfl_inputs(torch.float32)
    results = {}
    for name in (backend, 'off'):
        before = fused.get_fused_backend()
        fused.set_fused_backend(name)
        try:
            leaf = x.detach().clone().requires_grad_(True)
            loss = loss_fn(leaf, y, reduction=reduction, **kwargs)
            results[name] = (loss.detach(), torch.autograd.grad(loss, leaf)[0])
        finally:
            fused.set_fused_backend(before)
    torch.testing.assert_close(results[backend][0], results['off'][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(results[backend][1], results['off'][1], rtol=1e-4, atol=1e-7)
