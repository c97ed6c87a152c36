"""Fused ``'exact'`` softmax focal loss and unified focal family: loss and closed-form gradient
from one log-softmax pass.

The autograd formulations (:func:`.softmax_focal.softmax_focal_terms`,
:func:`.unified_focal.unified_family_loss`, kept as the references and used by
``FOCAL_PLUGIN_FUSED=off``) take the margin of *every* class (two log-sum-exps), build a dense
one-hot target and keep a dozen full-size intermediates for backward. With class-index labels
only the labelled class enters the focal term, so one pass suffices:

1. ``z = x - max``, ``E = exp(z)`` with the labelled entry set to 0, ``others = sum E``: the
   only full-size work, as in ``F.cross_entropy``'s log-softmax;
2. per pixel, the labelled class's ``log p``, ``log(1 - p)`` and ``log p / (1 - p)`` from
   :func:`.logspace.target_softmax_logs` (exact where the softmax saturates);
3. the focal loss ``-w (1 - p)**gamma log p`` and its derivative with respect to ``log p``,
   ``g = -w (1 - p)**gamma (1 - gamma p log p / (1 - p))`` (bounded: the singular
   ``(1 - p)**(gamma - 1)`` never appears), so ``dL/dx_k = g (1[k = y] - p_k)``: ``-g E_k / S``
   off the label and ``g others / S`` on it (no ``1 - p`` cancellation);
4. for the Tversky term, TP/FN per image and class are scatter-sums of the per-pixel ``p_y``
   and ``1 - p_y``, FP a matrix-vector product of ``E`` with ``mask / S``; its gradient is
   ``p_k (G_k - sum_c p_c G_c)`` with ``G`` the (image, class) derivatives of the Tversky
   power, folded into the same full-size pass as the focal term's.

Autograd keeps one tensor, the local gradient (logits' shape); backward multiplies it by the
incoming gradient into a new tensor (a second backward gets the same gradient). A
``create_graph`` backward differentiates the autograd reference instead (second derivatives
as the reference has them). The unified family with a Tversky term runs in float64, as the
reference's Tversky part does (its sums of saturated probabilities are float32 denormals); the
focal-only losses run in the logits' compute dtype. Two classes go entirely per pixel (the
softmax of two logits is the sigmoid of their difference). The full-size steps are torch's own
reductions and element-wise ops; the per-pixel math is one kernel, compiled through
:mod:`.compile_backend`'s cache under the same ``FOCAL_PLUGIN_FUSED`` backends (eager with
'eager', and while 'auto' compiles). Under a user's ``torch.compile`` the references are
traced.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor

from .compile_backend import CompiledKernels, get_fused_backend
from .logspace import softplus_pair, target_softmax_logs

__all__ = ['segmentation_fused', 'fused_softmax_focal', 'fused_unified']


def segmentation_fused(x: Tensor, *tensors: Optional[Tensor]) -> bool:
    """Whether the fused path serves this call: not with backend 'off', not inside a
    ``torch.compile`` trace (the compiler fuses the reference itself), not when a weight or
    target needs a gradient."""
    if get_fused_backend() == 'off' or torch.compiler.is_compiling():
        return False
    if x.dtype not in (torch.float32, torch.float64):
        return False
    return not any(t is not None and t.requires_grad for t in tensors)


def _log_softmax_pass(x: Tensor, labels: Tensor,
                      dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """``(E, z_y, others)`` in ``dtype``: ``E = exp(x - max)`` (N, C, ...) with the labelled
    entry 0, ``z_y`` the labelled class's shifted logit, ``others`` the sum of ``E``
    (N, 1, ...). One copy of the logits is made and worked on in place."""
    e = x.to(dtype, copy=True)
    e.sub_(x.amax(dim=1, keepdim=True).to(dtype))
    z_y = e.gather(1, labels)
    e.exp_()
    e.scatter_(1, labels, 0.0)
    return e, z_y, e.sum(dim=1, keepdim=True)


def focal_pixels(z_y: Tensor, others: Tensor, weight: Tensor, gamma: Tensor):
    """Per pixel (1-D): the focal loss ``-weight (1 - p_y)**gamma log p_y`` and the two
    factors of its gradient: ``off = -g / S`` (times ``E_k`` off the label) and
    ``on = g others / S`` (on the label), ``g`` the derivative w.r.t. ``log p_y``."""
    loss, g, logs, total = _focal_terms(z_y, others, weight, gamma)
    return loss, -g / total, g * others / total


def unified_pixels(z_y: Tensor, others: Tensor, weight: Tensor, gamma: Tensor):
    """Per pixel (1-D): the focal loss, ``g``, ``p_y``, ``1 - p_y`` and ``S``."""
    loss, g, logs, total = _focal_terms(z_y, others, weight, gamma)
    return loss, g, logs.p, torch.exp(logs.log_1mp), total


def _focal_terms(z_y: Tensor, others: Tensor, weight: Tensor, gamma: Tensor):
    logs = target_softmax_logs(z_y, others)
    # log(1 - p) = -inf (1 - p below the smallest float): b**gamma is 0 for gamma > 0 and 1
    # for gamma == 0; a finite floor gives both without 0 * inf
    log_1mp = logs.log_1mp.clamp(min=torch.finfo(z_y.dtype).min)
    factor = torch.exp(gamma * log_1mp)
    loss = -weight * factor * logs.log_p
    g = -weight * factor * (1 - gamma * logs.p * logs.log_p_over_1mp)
    return loss, g, logs, torch.exp(z_y) + others


def binary_unified_pixels(x0: Tensor, x1: Tensor, is_one: Tensor, weight: Tensor,
                          gamma: Tensor):
    """Two classes, for the unified loss: the focal loss, its derivative w.r.t.
    ``u = x_y - x_other``, ``p_y`` and ``1 - p_y`` (each from the sigmoid pair, exact)."""
    u = torch.where(is_one, x1 - x0, x0 - x1)
    sp_u, ce, e = softplus_pair(u)
    factor = weight * torch.exp(-gamma * sp_u)
    inv = 1 / (1 + e)
    big = u >= 0
    one_minus_p = torch.where(big, e * inv, inv)
    p = torch.where(big, inv, e * inv)
    return factor * ce, factor * (-gamma * p * ce - one_minus_p), p, one_minus_p


def binary_focal_pixels(x0: Tensor, x1: Tensor, is_one: Tensor, weight: Tensor, gamma: Tensor):
    """Two classes: a softmax over two logits is the sigmoid of their difference
    ``u = x_y - x_other``, so everything is per pixel (no full-size pass) and the log-space
    pair of :func:`.logspace.softplus_pair` (one exp, one log1p) gives ``-log(1 - p_y)`` and
    ``-log p_y``; the derivative is :func:`.fused_kernels.hard_loss`'s for a positive.
    Returns the loss and its gradient with respect to ``x0`` and ``x1``."""
    loss, d_u, _, _ = binary_unified_pixels(x0, x1, is_one, weight, gamma)
    return loss, torch.where(is_one, -d_u, d_u), torch.where(is_one, d_u, -d_u)


KERNELS = {fn.__name__: fn for fn in (focal_pixels, unified_pixels, binary_focal_pixels,
                                      binary_unified_pixels)}


class _PixelKernels(CompiledKernels):
    """The compile cache of :mod:`.compile_backend` (same backends, same background worker,
    same failure report) for the per-pixel kernels above."""

    def _build(self, key: tuple) -> None:
        if key in self.ready:
            return
        name, dtype, device = key
        try:
            compiled = torch.compile(KERNELS[name], dynamic=True)
            n = 1 << 12
            z = -torch.linspace(0, 5, n, dtype=dtype, device=device)
            ones = torch.ones(n, dtype=dtype, device=device)
            with torch.no_grad():
                for gamma in (torch.full((), 0.5, dtype=dtype, device=device), ones / 2):
                    if name.startswith('binary'):
                        compiled(z, z.flip(0), z > -2.5, ones, gamma)
                    else:
                        compiled(z, torch.rand(n, dtype=dtype, device=device), ones, gamma)
            self.ready[key] = compiled
        except Exception as err:  # no C++ compiler, unsupported platform, exit, ...
            if not self.closing:
                self.failed = f'{type(err).__name__}: {err}'


_COMPILED = _PixelKernels()


def _pixel_kernel(name: str, x: Tensor) -> Callable:
    """The per-pixel kernel as the backend says: compiled (waiting for it with 'compile'),
    else (eager backend, 'auto' while compiling, compilation failed) the eager function."""
    backend = get_fused_backend()
    if backend in ('compile', 'auto'):
        kernel = _COMPILED.get((name, x.dtype, x.device.type), block=backend == 'compile')
        if kernel is not None:
            return kernel
    return KERNELS[name]


def _flat(*tensors: Tensor):
    return [t.reshape(-1) for t in tensors]


class _LocalGradLoss(torch.autograd.Function):
    """Output ``out`` with its saved local gradient; backward is one multiplication
    (``create_graph``: the reference, differentiated by autograd)."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: Callable, reference: Callable) -> Tensor:
        out, local_grad = kernel(x.detach())
        ctx.save_for_backward(local_grad, x)
        ctx.reference = reference
        ctx.per_pixel = out.ndim > 0
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        local_grad, x = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: second derivatives from the reference
            with torch.enable_grad():
                ref = ctx.reference(x)
                (d_x,) = torch.autograd.grad(ref, x, grad, create_graph=True)
            return d_x, None, None
        if ctx.per_pixel and grad.numel() and not any(grad.stride()):
            grad = grad.reshape(-1)[0]  # a mean's expanded scalar: a scalar multiply
        elif ctx.per_pixel:
            grad = grad.unsqueeze(1)
        return local_grad * grad, None, None


def _run(x: Tensor, kernel: Callable, reference: Callable) -> Tensor:
    if x.requires_grad and torch.is_grad_enabled():
        return _LocalGradLoss.apply(x, kernel, reference)
    with torch.no_grad():  # no gradient wanted: the same kernel, its gradient dropped
        return kernel(x)[0]


def fused_softmax_focal(x: Tensor, labels: Tensor, weight: Tensor,
                        gamma: Union[float, Tensor], reference: Callable) -> Tensor:
    """The per-pixel focal loss (N, ...) ``-weight (1 - p_y)**gamma log p_y`` for index
    ``labels`` (N, ...) in [0, C) and per-pixel ``weight`` (class weight times the valid
    mask; 0 where ignored); ``gamma`` a number or one per pixel (N, ...). ``reference(x)``
    is the autograd formulation of the same output (for ``create_graph``)."""
    labels = labels.long().unsqueeze(1)
    weight = weight.unsqueeze(1).to(x.dtype)
    gamma = gamma.unsqueeze(1).to(x.dtype) if isinstance(gamma, Tensor) else \
        torch.full((), gamma, dtype=x.dtype, device=x.device)

    def binary(logits: Tensor):
        num = logits.shape[0]
        pair = logits.reshape(num, 2, -1) if num else logits.reshape(0, 2, 0)
        flat = [t.reshape(pair.shape[0], pair.shape[2]) for t in (labels == 1, weight)]
        loss, grad0, grad1 = _pixel_kernel('binary_focal_pixels', logits)(
            pair[:, 0], pair[:, 1], *flat,
            gamma.reshape(flat[0].shape) if gamma.ndim else gamma)
        return loss.view(labels.shape).squeeze(1), torch.stack([grad0, grad1], 1).view(
            logits.shape)

    def kernel(logits: Tensor):
        if logits.shape[1] == 2:
            return binary(logits)
        e, z_y, others = _log_softmax_pass(logits, labels, logits.dtype)
        pixels = _pixel_kernel('focal_pixels', logits)
        g_shape = torch.broadcast_shapes(z_y.shape, weight.shape)
        loss, off, on = pixels(*_flat(z_y, others, weight.expand(g_shape)),
                               gamma.reshape(-1) if gamma.ndim else gamma)
        e.mul_(off.view(z_y.shape))
        e.scatter_(1, labels, on.view(z_y.shape))
        return loss.view(z_y.shape).squeeze(1), e
    return _run(x, kernel, reference)


def _tversky_terms(tp: Tensor, fn: Tensor, fp: Tensor, delta: float, k: Tensor,
                   smooth: float, tv_scale: float):
    """From the region sums (N, C): ``tv_scale * sum (1 - TI)**k`` and the derivatives of
    that with respect to FP and to TP minus FN (the zero-safe power's rules at 0)."""
    mismatch = delta * fn + (1 - delta) * fp
    denominator = tp + mismatch + smooth
    u = mismatch / denominator                         # 1 - TI without cancelling
    positive = u > 0
    safe_u = torch.where(positive, u, torch.ones_like(u))
    power = torch.where(positive, safe_u ** k, torch.zeros_like(u))
    power = torch.where(k == 0, torch.ones_like(u), power)
    # d(u**k)/du: 1 at k == 1, 0 at k == 0 and, as the zero-safe power defines it, at u == 0
    slope = torch.where(positive, k * safe_u ** (k - 1), torch.zeros_like(u))
    slope = torch.where(k == 1, torch.ones_like(u), slope)
    d_u = slope * tv_scale / denominator ** 2
    d_fp = d_u * (1 - delta) * (tp + smooth)
    d_tp_minus_fn = d_u * (-mismatch - delta * (tp + smooth))
    return tv_scale * power.sum(), d_fp, d_tp_minus_fn


def fused_unified(x: Tensor, labels: Tensor, valid: Tensor, mask: Tensor, lam: float,
                  delta: float, gamma: float, symmetric: bool, smooth: float,
                  focal_count: Tensor, reference: Callable) -> Tensor:
    """``lam * focal_Tversky + (1 - lam) * asymmetric_focal`` (a scalar; ``lam`` 1: the
    Tversky term alone) for index ``labels`` (N, ...) and the per-pixel ``mask`` (valid
    times pixel weights), C >= 2 softmax channels, in float64. ``focal_count``: the focal
    mean's denominator."""
    num, classes = x.shape[0], x.shape[1]
    hw = x.shape[2:].numel()  # pixels per image
    labels = labels.long().unsqueeze(1)
    flat = labels.reshape(num, hw)
    m = mask.to(torch.float64).reshape(num, 1, hw)
    cls_w = torch.full((classes,), delta, dtype=torch.float64, device=x.device)
    cls_w[0] = 1 - delta
    cls_g = torch.full((classes,), gamma if symmetric else 0.0, dtype=torch.float64,
                       device=x.device)
    cls_g[0] = gamma
    k = torch.full((classes,), 1 - gamma, dtype=torch.float64, device=x.device)
    k[0] = 1 - gamma if symmetric else 1.0  # the Tversky exponent per class
    tv_scale = lam / max(num * classes, 1)

    def binary(logits: Tensor):
        """Two classes: p_other = 1 - p_y, so FP_c = FN_(other class) and every full-size
        step is per pixel (see :func:`binary_unified_pixels`)."""
        pair = logits.to(torch.float64).reshape(num, 2, hw)
        is_one = flat == 1
        loss, d_u, p_y, one_minus_p = _pixel_kernel('binary_unified_pixels', pair)(
            pair[:, 0], pair[:, 1], is_one, cls_w[flat] * m.view(num, hw), cls_g[flat])
        mp = m.view(num, hw)
        tp = torch.zeros(num, 2, dtype=torch.float64, device=x.device)
        fn = torch.zeros_like(tp)
        tp.scatter_add_(1, flat, mp * p_y)
        fn.scatter_add_(1, flat, mp * one_minus_p)
        value, d_fp, d_tp_minus_fn = _tversky_terms(tp, fn, fn.flip(1), delta, k, smooth,
                                                    tv_scale)
        focal_scale = (1 - lam) / torch.as_tensor(focal_count, dtype=torch.float64)
        # dL/dp_y = m (dTP_y - dFN_y - dFP_other); dp_y/du = p_y (1 - p_y)
        d_p = mp * (d_tp_minus_fn.gather(1, flat) - d_fp.flip(1).gather(1, flat))
        d_u = d_p * p_y * one_minus_p + focal_scale * d_u
        grad = torch.stack([torch.where(is_one, -d_u, d_u), torch.where(is_one, d_u, -d_u)], 1)
        value = value + focal_scale * loss.sum()
        return value.to(logits.dtype), grad.view(logits.shape).to(logits.dtype)

    def kernel(logits: Tensor):
        if classes == 2:
            return binary(logits)
        e, z_y, others = _log_softmax_pass(logits, labels, torch.float64)
        e = e.reshape(num, classes, hw)
        z_y, others = z_y.reshape(num, 1, hw), others.reshape(num, 1, hw)
        pixels = _pixel_kernel('unified_pixels', e)
        loss, g, p_y, one_minus_p, total = (t.view(z_y.shape) for t in pixels(
            *_flat(z_y, others, cls_w[flat] * m.view(num, hw), cls_g[flat])))
        scale = m / total                                  # mask / S per pixel
        tp = torch.zeros(num, classes, dtype=torch.float64, device=x.device)
        fn = torch.zeros_like(tp)
        tp.scatter_add_(1, flat, (m * p_y).reshape(num, hw))
        fn.scatter_add_(1, flat, (m * one_minus_p).reshape(num, hw))
        fp = torch.bmm(e, scale.transpose(1, 2)).squeeze(-1)  # E holds 0 at the label
        value, d_fp, d_tp_minus_fn = _tversky_terms(tp, fn, fp, delta, k, smooth, tv_scale)
        focal_scale = (1 - lam) / torch.as_tensor(focal_count, dtype=torch.float64)
        # Off the label dL/dx_k = p_k (m (dFP_k - p_y B_y - Q) - focal g), with
        # Q = sum_{c != y} p_c dFP_c. For the arg-max class a (when it is not the label)
        # dFP_a - Q cancels as p_a -> 1, so its row is taken apart: with E' = E without a,
        # rest = sum E' and Q' = sum_c E'_c dFP_c, dFP_a - p_y B_y - Q =
        # (dFP_a rest - Q') / S + p_y (dFP_a - B_y), a sum without cancellation.
        top = logits.argmax(dim=1).reshape(num, 1, hw)
        not_top = (top != labels.reshape(num, 1, hw)).to(torch.float64)
        e.scatter_(1, top, 0.0)                            # E' (0 at the label and at a)
        rest = e.sum(dim=1, keepdim=True)
        b_y = d_tp_minus_fn.gather(1, flat).unsqueeze(1)
        a_top = d_fp.gather(1, top.squeeze(1)).unsqueeze(1)
        q_rest = torch.bmm(d_fp.unsqueeze(1), e)
        q = (q_rest + not_top * a_top) / total
        focal = focal_scale * g
        on_label = m * p_y * (one_minus_p * b_y - q) + focal * others / total
        on_top = (m * ((a_top * rest - q_rest) / total + p_y * (a_top - b_y)) - focal) / total
        grad = (d_fp.unsqueeze(-1) - (p_y * b_y + q)).mul_(m).sub_(focal)
        grad.mul_(e).div_(total)
        grad.scatter_(1, top, on_top)
        grad.scatter_(1, flat.unsqueeze(1), on_label)      # (after a: a == y is the label)
        value = value + focal_scale * loss.sum()
        return value.to(logits.dtype), grad.view(logits.shape).to(logits.dtype)
    return _run(x, kernel, reference)
