"""Independent high-precision references (mpmath, 50 digits) for the focal-family losses.

Nothing here shares code with ``focal_plugin``: each loss is written from its paper formula and
differentiated in closed form (checked against mpmath's numerical derivative in
``tests/functional/test_reference_self_check.py``), then rounded to float64.
"""
from __future__ import annotations

import mpmath as mp
import torch

mp.mp.dps = 50


def _sig(x):
    return 1 / (1 + mp.exp(-x))


def focal_elem(x: float, t: float, gamma: float, alpha):
    """Sigmoid focal loss of one element, its derivative d/dx, and the derivative's condition
    scale (sum of the absolute values of its two terms): float32 can only promise a relative
    error of the scale where the two terms cancel."""
    x, t, g = mp.mpf(x), mp.mpf(t), mp.mpf(gamma)
    p, q = _sig(x), _sig(-x)                        # p = sigma(x), q = 1 - p (exact)
    ce = -(t * mp.log(p) + (1 - t) * mp.log(q))
    m = t * q + (1 - t) * p                          # 1 - p_t
    a = 1 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    loss = a * m ** g * ce
    dm = p * q * (1 - 2 * t)
    dce = p - t
    term1 = dce * m ** g
    term2 = g * m ** (g - 1) * dm * ce if m != 0 else 0
    return float(loss), float(a * (term1 + term2)), float(abs(a) * (abs(term1) + abs(term2)))


def quality_elem(x: float, y: float, beta: float):
    """QFL of one element, ``BCE(x, y) * |y - sigma(x)| ** beta``, and d/dx (0 at the cusp)."""
    x, y, b = mp.mpf(x), mp.mpf(y), mp.mpf(beta)
    p, q = _sig(x), _sig(-x)
    ce = -(y * mp.log(p) + (1 - y) * mp.log(q))
    d = y * q - (1 - y) * p                          # y - sigma(x), without cancellation
    base = abs(d)
    loss = ce * base ** b
    if base == 0:
        return float(loss), 0.0
    dbase = -mp.sign(d) * p * q
    grad = (p - y) * base ** b + ce * b * base ** (b - 1) * dbase
    return float(loss), float(grad)


def varifocal_elem(x: float, t: float, alpha: float, gamma: float, iou_weighted: bool):
    x, t = mp.mpf(x), mp.mpf(t)
    p, q = _sig(x), _sig(-x)
    ce = -(t * mp.log(p) + (1 - t) * mp.log(q))
    dce = p - t
    if t > 0:
        w = t if iou_weighted else 1
        return float(w * ce), float(w * dce)
    g = mp.mpf(gamma)
    w = alpha * p ** g                               # |sigma - 0| ** gamma
    dw = alpha * g * p ** g * q                      # d/dx p^g = g p^g (1 - p)
    return float(w * ce), float(w * dce + dw * ce)


# --- derivatives with respect to the target (soft targets, scores that require grad): each
# from its paper formula as a function of t, with dBCE/dt = log(1 - p) - log(p) = -x ----------
def focal_target_grad(x: float, t: float, gamma: float, alpha):
    """d/dt of the sigmoid focal loss of one element (finite for every finite x, t)."""
    x, t, g = mp.mpf(x), mp.mpf(t), mp.mpf(gamma)
    p, q = _sig(x), _sig(-x)
    ce = -(t * mp.log(p) + (1 - t) * mp.log(q))
    m = t * q + (1 - t) * p                          # 1 - p_t > 0 for finite x
    a = 1 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    da = 0 if alpha is None else 2 * alpha - 1
    dce = mp.log(q) - mp.log(p)
    return float(da * m ** g * ce + a * m ** g * dce + a * g * m ** (g - 1) * (q - p) * ce)


def quality_target_grad(x: float, y: float, beta: float):
    """d/dy of QFL ``BCE(x, y) |y - sigma(x)|**beta`` (0 at the cusp, as d/dx)."""
    x, y, b = mp.mpf(x), mp.mpf(y), mp.mpf(beta)
    p, q = _sig(x), _sig(-x)
    ce = -(y * mp.log(p) + (1 - y) * mp.log(q))
    d = y * q - (1 - y) * p                          # y - sigma(x)
    if d == 0:
        return 0.0
    return float((mp.log(q) - mp.log(p)) * abs(d) ** b + ce * b * abs(d) ** (b - 1) * mp.sign(d))


def varifocal_target_grad(x: float, t: float, alpha: float, gamma: float, iou_weighted: bool):
    """d/dt of VFL: the branch that holds at t (mmdet's ``t > 0``); at t = 0 that is the
    negative branch ``alpha |sigma(x) - t|**gamma BCE(x, t)`` (the loss jumps at 0+)."""
    x, t, g = mp.mpf(x), mp.mpf(t), mp.mpf(gamma)
    p, q = _sig(x), _sig(-x)
    ce = -(t * mp.log(p) + (1 - t) * mp.log(q))
    dce = mp.log(q) - mp.log(p)
    if t > 0:
        return float(ce + t * dce) if iou_weighted else float(dce)
    base = abs(p - t)
    return float(alpha * (-g * base ** (g - 1) * mp.sign(p - t) * ce + base ** g * dce))


def map_elements(fn, x: torch.Tensor, t: torch.Tensor, *args):
    """Apply a scalar reference element-wise; returns one float64 tensor per output
    (loss, grad[, grad_scale])."""
    rows = [fn(float(a), float(b), *args) for a, b in zip(x.flatten().tolist(),
                                                       t.flatten().tolist())]
    rows = [row if isinstance(row, tuple) else (row,) for row in rows]
    return tuple(torch.tensor(col, dtype=torch.float64).view(x.shape) for col in zip(*rows))


def softmax_focal_row(logits, label: int, gamma: float, alpha=None):
    """Multi-class focal loss of one row and its gradient (list), closed form."""
    xs = [mp.mpf(v) for v in logits]
    mx = max(xs)
    z = mp.fsum(mp.exp(v - mx) for v in xs)
    p = [mp.exp(v - mx) / z for v in xs]
    others = mp.fsum(mp.exp(v - mx) for j, v in enumerate(xs) if j != label) / z  # 1 - p_y
    g = mp.mpf(gamma)
    a = 1 if alpha is None else alpha[label]
    logp = mp.log(p[label])
    loss = -a * others ** g * logp
    # d/dx_k of -(1-p_y)^g log p_y with dp_y/dx_k = p_y(delta - p_k), d(1-p_y)/dx_k = -that
    grads = []
    for k in range(len(xs)):
        dpy = p[label] * ((1 if k == label else 0) - p[k])
        dlogp = (1 if k == label else 0) - p[k]
        dfac = -g * others ** (g - 1) * dpy if others != 0 else 0
        grads.append(float(-a * (dfac * logp + others ** g * dlogp)))
    return float(loss), grads


# --- The Unified Focal Loss authors' Keras losses (github.com/mlyg/unified-focal-loss,
# loss_functions.py), ported line by line to numpy float64 for binary segmentation: inputs are
# probabilities (N, H, W, 2) channels-last and one-hot targets, clipped to [eps, 1 - eps] with
# eps = K.epsilon() = 1e-7, which is also their Tversky smoothing. ---------------------------
KERAS_EPSILON = 1e-7


def _keras_clip(y_pred):
    import numpy as np
    return np.clip(y_pred, KERAS_EPSILON, 1.0 - KERAS_EPSILON)


def authors_focal(y_true, y_pred, delta, gamma, symmetric):
    """asymmetric_focal_loss / symmetric_focal_loss."""
    import numpy as np
    y_pred = _keras_clip(y_pred)
    cross_entropy = -y_true * np.log(y_pred)
    back_ce = (1 - delta) * np.power(1 - y_pred[..., 0], gamma) * cross_entropy[..., 0]
    fore_ce = cross_entropy[..., 1]
    if symmetric:
        fore_ce = np.power(1 - y_pred[..., 1], gamma) * fore_ce
    fore_ce = delta * fore_ce
    return np.mean(np.sum(np.stack([back_ce, fore_ce], axis=-1), axis=-1))


def authors_focal_tversky(y_true, y_pred, delta, gamma, symmetric):
    """asymmetric_focal_tversky_loss / symmetric_focal_tversky_loss (per image and class)."""
    import numpy as np
    y_pred = _keras_clip(y_pred)
    axis = (1, 2)
    tp = np.sum(y_true * y_pred, axis=axis)
    fn = np.sum(y_true * (1 - y_pred), axis=axis)
    fp = np.sum((1 - y_true) * y_pred, axis=axis)
    dice_class = (tp + KERAS_EPSILON) / (tp + delta * fn + (1 - delta) * fp + KERAS_EPSILON)
    back_dice = 1 - dice_class[:, 0]
    if symmetric:
        back_dice = back_dice * np.power(1 - dice_class[:, 0], -gamma)
    fore_dice = (1 - dice_class[:, 1]) * np.power(1 - dice_class[:, 1], -gamma)
    return np.mean(np.stack([back_dice, fore_dice], axis=-1))


def authors_unified_focal(y_true, y_pred, weight=0.5, delta=0.6, gamma=0.5, symmetric=False):
    """asym_unified_focal_loss / sym_unified_focal_loss."""
    ftl = authors_focal_tversky(y_true, y_pred, delta, gamma, symmetric)
    fl = authors_focal(y_true, y_pred, delta, gamma, symmetric)
    if weight is None:
        return ftl + fl
    return weight * ftl + (1 - weight) * fl


def keras_binary_inputs(logits: torch.Tensor, labels: torch.Tensor):
    """(N, 1, H, W) logits and (N, H, W) labels -> the authors' (y_true, y_pred): channels-last
    one-hot targets and (1 - sigmoid, sigmoid) probabilities, in float64 numpy."""
    import numpy as np
    x = logits.double().numpy()[:, 0]
    p = 1 / (1 + np.exp(-x))
    q = 1 / (1 + np.exp(x))
    y = labels.numpy()
    return (np.stack([y == 0, y == 1], axis=-1).astype(np.float64),
            np.stack([q, p], axis=-1))


# --- mmcv's focal-loss kernels (mmcv/ops/csrc/common/cuda/{sigmoid,softmax}_focal_loss_cuda_
# kernel.cuh, mmcv 2.1; CUDA only, so CPU tests use this port), float64 numpy, forward only.
# Labels are class indices; for the sigmoid form label == num_classes is background. Their
# 'mean' is the sum over everything divided by the number of rows N (focal_loss.py). --------
FLT_MIN = 1.1754943508222875e-38


def _mmcv_reduce(out, n_rows, reduction):
    return {'none': out, 'sum': out.sum(), 'mean': out.sum() / n_rows}[reduction]


def mmcv_sigmoid_focal(logits, labels, gamma, alpha, weight=None, reduction='mean'):
    import numpy as np
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(labels)
    c = np.arange(x.shape[1])[None, :]
    flag_p = (t[:, None] == c).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    term_p = np.power(1.0 - p, gamma) * np.log(np.maximum(p, FLT_MIN))
    term_n = np.power(p, gamma) * np.log(np.maximum(1.0 - p, FLT_MIN))
    out = -flag_p * alpha * term_p - (1 - flag_p) * (1.0 - alpha) * term_n
    if weight is not None:
        out = out * np.asarray(weight, dtype=np.float64)[t][:, None]
    return _mmcv_reduce(out, x.shape[0], reduction)


def mmcv_softmax_focal(logits, labels, gamma, alpha, weight=None, reduction='mean'):
    import numpy as np
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(labels)
    e = np.exp(x - x.max(axis=1, keepdims=True))  # the Python side's softmax
    pred = (e / e.sum(axis=1, keepdims=True))[np.arange(x.shape[0]), t]
    out = -alpha * np.power(1.0 - pred, gamma) * np.log(np.maximum(pred, FLT_MIN))
    if weight is not None:
        out = out * np.asarray(weight, dtype=np.float64)[t]
    return _mmcv_reduce(out, x.shape[0], reduction)
