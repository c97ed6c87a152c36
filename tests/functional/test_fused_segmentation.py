"""The fused softmax focal loss and unified focal family (issue 36) against the autograd
formulations they replace (FOCAL_PLUGIN_FUSED=off), on every backend: values and gradients
over drawn segmentation inputs (saturated logits, ties, gamma near 0, ignore_index, class
weights, pixel weights, empty and all-ignored images), 16-bit inputs, retain_graph /
create_graph, and the choice of path itself."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from focal_plugin.functional import fused, softmax_focal_loss
from focal_plugin.functional.unified_focal import unified_family_loss

FUSED = ['compile', 'eager']
SETTINGS = settings(derandomize=True, max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
SCALES = [1.0, 20.0, 100.0, 1e4]


@pytest.fixture(autouse=True)
def restore_backend():
    before = fused.get_fused_backend()
    yield
    fused.set_fused_backend(before)


@st.composite
def segmentation_inputs(draw, max_classes=5):
    """(logits float64 (N, C, H, W), labels with 255 ignored, per-pixel weights or None)."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(2, max_classes))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from(SCALES))
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * scale
    if draw(st.booleans()):  # ties at the maximum, and integral saturated logits
        x = x.round().clamp(-scale, scale)
    labels = torch.randint(0, c, (n, h, w), generator=g)
    ignored = torch.rand(n, h, w, generator=g) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    labels[ignored] = 255
    weight = torch.rand(n, h, w, generator=g, dtype=torch.float64) \
        if draw(st.booleans()) else None
    return x, labels, weight


def run(backend, fn, x, *args, **kwargs):
    """(loss, gradient) of ``fn(x, ...)`` with ``backend``; per-pixel losses are summed with
    drawn upstream weights, so that backward sees a non-uniform incoming gradient."""
    fused.set_fused_backend(backend)
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kwargs)
    upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).view(loss.shape)
    (grad,) = torch.autograd.grad((loss * upstream).sum(), x)
    return loss.detach(), grad


def unified(part):
    """``unified_family_loss`` with the logits first (as :func:`run` calls it)."""
    return lambda x, *args, **kwargs: unified_family_loss(part, x, *args, **kwargs)


def assert_same(got, ref, rtol=1e-10, floor=1e-300):
    """Equal to float64 precision: relative per element, with the tensor's largest magnitude
    as the scale of the elements where terms cancel; ``floor``: the smallest normal number of
    the dtype a result came back in (below it nothing can be told apart)."""
    scale = ref.abs().max().item() if ref.numel() else 0.0
    torch.testing.assert_close(got, ref, rtol=rtol, atol=rtol * scale + floor)


@pytest.mark.parametrize('backend', FUSED)
@SETTINGS
@given(case=segmentation_inputs(), gamma=st.sampled_from([0.0, 1e-3, 0.01, 0.5, 2.0, 5.0]),
       weighted=st.booleans(), reduction=st.sampled_from(['none', 'mean', 'sum']))
def test_softmax_focal_fused_equals_autograd(backend, case, gamma, weighted, reduction):
    x, labels, _ = case
    c = x.shape[1]
    kw = dict(gamma=gamma, ignore_index=255, reduction=reduction)
    if weighted:
        kw.update(alpha=[0.25 + 0.5 * i / c for i in range(c)],
                  class_weight=[1.0 + i for i in range(c)])
    loss, grad = run(backend, softmax_focal_loss, x, labels, **kw)
    ref_loss, ref_grad = run('off', softmax_focal_loss, x, labels, **kw)
    assert_same(loss, ref_loss)
    assert_same(grad, ref_grad)


@pytest.mark.parametrize('backend', FUSED)
@SETTINGS
@given(case=segmentation_inputs(), part=st.sampled_from(['focal', 'tversky', 'unified']),
       variant=st.sampled_from(['asymmetric', 'symmetric']),
       gamma=st.sampled_from([0.0, 1e-3, 0.5, 0.99, 1.0]), delta=st.sampled_from([0.6, 0.3]),
       lam=st.sampled_from([0.5, 0.2]), avg_non_ignore=st.booleans())
def test_unified_family_fused_equals_autograd(backend, case, part, variant, gamma, delta, lam,
                                              avg_non_ignore):
    x, labels, weight = case
    kw = dict(variant=variant, ignore_index=255, pixel_weight=weight,
              avg_non_ignore=avg_non_ignore)
    loss, grad = run(backend, unified(part), x, labels, lam, delta, gamma, **kw)
    ref_loss, ref_grad = run('off', unified(part), x, labels, lam, delta, gamma, **kw)
    assert_same(loss, ref_loss)
    assert_same(grad, ref_grad)


def independent_tversky(x, labels, weight, delta, gamma):
    """The paper's asymmetric focal Tversky loss with per-pixel weights, written out in
    float64 from the softmax (moderate logits only): each pixel's weight scales its share
    of TP, FN and FP once."""
    p = torch.softmax(x, dim=1)
    y = torch.nn.functional.one_hot(labels, x.shape[1]).movedim(-1, 1).double()
    w = weight.unsqueeze(1)
    tp, fn, fp = ((w * y * p).sum((2, 3)), (w * y * (1 - p)).sum((2, 3)),
                  (w * (1 - y) * p).sum((2, 3)))
    one_minus_ti = 1 - (tp + 1e-7) / (tp + delta * fn + (1 - delta) * fp + 1e-7)
    per_class = torch.cat([one_minus_ti[:, :1], one_minus_ti[:, 1:] ** (1 - gamma)], dim=1)
    return per_class.mean()


@pytest.mark.parametrize('backend', FUSED + ['off'])
def test_pixel_weights_scale_each_pixels_share_of_the_tversky_sums(backend):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 3, (2, 5, 4), generator=g)
    weight = torch.rand(2, 5, 4, generator=g, dtype=torch.float64) * 2
    loss, grad = run(backend, unified('tversky'), x, labels, 1.0, 0.6, 0.5,
                     variant='asymmetric', ignore_index=255, pixel_weight=weight)
    ref_loss, ref_grad = run('off', independent_tversky, x, labels, weight, 0.6, 0.5)
    assert_same(loss, ref_loss, rtol=1e-12)
    assert_same(grad, ref_grad, rtol=1e-9)


LOW_PRECISION = [(torch.float32, 1e-5), (torch.bfloat16, 2**-8), (torch.float16, 2**-11)]


@pytest.mark.parametrize('backend', FUSED)
@pytest.mark.parametrize('dtype,eps', LOW_PRECISION)
@pytest.mark.parametrize('loss_fn', ['softmax_focal', 'focal', 'tversky', 'unified'])
@pytest.mark.parametrize('scale', SCALES)
def test_16_and_32_bit_logits_within_their_precision_of_float64(backend, dtype, eps, loss_fn,
                                                                scale):
    g = torch.Generator().manual_seed(int(scale))
    x = (torch.randn(2, 4, 6, 5, generator=g, dtype=torch.float64) * scale).to(dtype)
    labels = torch.randint(0, 4, (2, 6, 5), generator=g)
    labels[0, 0] = 255
    if loss_fn == 'softmax_focal':
        fn, args = softmax_focal_loss, (labels,)
        kw = dict(gamma=0.5, ignore_index=255, reduction='none')
    else:
        fn, args = unified(loss_fn), (labels, 0.5, 0.6, 0.5)
        kw = dict(variant='asymmetric', ignore_index=255)
    loss, grad = run(backend, fn, x, *args, **kw)
    ref_loss, ref_grad = run('off', fn, x.double(), *args, **kw)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_same(loss.double(), ref_loss, rtol=1e-5, floor=torch.finfo(torch.float32).tiny)
    assert_same(grad.double(), ref_grad, rtol=eps, floor=torch.finfo(dtype).tiny)


def uses_fused(loss) -> bool:
    """Whether the fused autograd function is in ``loss``'s graph."""
    stack, seen = [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == '_LocalGradLossBackward':
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False


def fused_calls():
    """(name, fn(x) -> loss) for every fused entry point."""
    labels = torch.tensor([[[0, 1, 2], [2, 255, 1]]])
    weight = torch.tensor([[[1.0, 0.5, 2.0], [1.0, 1.0, 0.0]]], dtype=torch.float64)
    return {
        'softmax_focal': lambda x: softmax_focal_loss(x, labels, gamma=0.5, ignore_index=255,
                                                      class_weight=[1.0, 2.0, 0.5]),
        'focal': lambda x: unified_family_loss('focal', x, labels, 0.5, 0.6, 0.5,
                                               variant='asymmetric', ignore_index=255,
                                               pixel_weight=weight),
        'unified': lambda x: unified_family_loss('unified', x, labels, 0.5, 0.6, 0.3,
                                                 variant='symmetric', ignore_index=255,
                                                 pixel_weight=weight),
    }


@pytest.mark.parametrize('name', ['softmax_focal', 'focal', 'unified'])
@pytest.mark.parametrize('backend', FUSED)
def test_retain_graph_create_graph_and_gradcheck(backend, name):
    fn = fused_calls()[name]
    fused.set_fused_backend(backend)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(1, 3, 2, 3, generator=g, dtype=torch.float64) * 3).requires_grad_()
    loss = fn(x)
    assert uses_fused(loss)  # the fused path serves
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()  # a second backward through the same graph: the same gradient again
    torch.testing.assert_close(x.grad, 2 * first, rtol=1e-15, atol=0)
    assert torch.autograd.gradcheck(fn, (x,))
    # create_graph: Hessian-vector products equal the autograd formulation's
    v = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).view(x.shape)
    hvps = []
    for b in (backend, 'off'):
        fused.set_fused_backend(b)
        (d_x,) = torch.autograd.grad(fn(x), x, create_graph=True)
        hvps.append(torch.autograd.grad((d_x * v).sum(), x)[0])
    assert_same(hvps[0], hvps[1])


@pytest.mark.parametrize('name', ['softmax_focal', 'focal', 'unified'])
def test_reference_serves_when_off_or_when_a_weight_needs_a_gradient(name):
    x = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    fused.set_fused_backend('off')
    assert not uses_fused(fused_calls()[name](x))
    fused.set_fused_backend('compile')
    labels = torch.tensor([[[0, 1, 2], [2, 1, 1]]])
    cw = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    loss = softmax_focal_loss(x, labels, gamma=0.5, class_weight=cw)
    assert not uses_fused(loss)
    loss.backward()
    assert cw.grad is not None and torch.isfinite(cw.grad).all()


@pytest.mark.parametrize('backend', FUSED + ['off'])
@pytest.mark.parametrize('shape', [(0, 3, 4, 4), (2, 3, 0, 4), (2, 3, 4, 4)])
@pytest.mark.parametrize('part', ['softmax_focal', 'focal', 'tversky', 'unified'])
def test_empty_and_all_ignored_images_give_zero_loss_and_gradient(backend, shape, part):
    x = (torch.randn(shape, dtype=torch.float64) * 50).requires_grad_()
    labels = torch.full((shape[0],) + shape[2:], 255)
    fused.set_fused_backend(backend)
    if part == 'softmax_focal':
        loss = softmax_focal_loss(x, labels, gamma=0.5, ignore_index=255)
    else:
        loss = unified_family_loss(part, x, labels, 0.5, 0.6, 0.5, variant='asymmetric',
                                   ignore_index=255)
    loss.backward()
    expected = 0.0 if part in ('softmax_focal', 'focal') else None
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    if expected is not None:
        assert loss.item() == expected
    assert (x.grad == 0).all()  # nothing counts, nothing moves


@pytest.mark.parametrize('backend', FUSED)
def test_no_grad_gives_the_same_value(backend):
    fused.set_fused_backend(backend)
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64) * 5
    for fn in fused_calls().values():
        with torch.no_grad():
            quiet = fn(x[:1])
        assert_same(quiet, fn(x[:1].clone().requires_grad_()).detach())


@pytest.mark.parametrize('backend', FUSED + ['off'])
def test_bad_labels_are_reported_on_every_backend(backend):
    fused.set_fused_backend(backend)
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    bad = torch.tensor([[[0, 3], [1, 2]]])
    with pytest.raises(ValueError, match='targets'):
        softmax_focal_loss(x, bad)
    with pytest.raises(ValueError, match='targets'):
        unified_family_loss('unified', x, bad, 0.5, 0.6, 0.5, variant='asymmetric',
                            ignore_index=255)
