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


def map_elements(fn, x: torch.Tensor, t: torch.Tensor, *args):
    """Apply a scalar reference element-wise; returns one float64 tensor per output
    (loss, grad[, grad_scale])."""
    rows = [fn(float(a), float(b), *args) for a, b in zip(x.flatten().tolist(),
                                                       t.flatten().tolist())]
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
