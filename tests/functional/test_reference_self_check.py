"""The references check themselves: the hand-derived gradients of ``tests/reference.py``
against mpmath's numerical derivative (50 digits) of the loss written from the paper formula,
at friendly and saturated logits. A wrong closed form there would make every numerics test
compare against the wrong thing."""
import itertools

import mpmath as mp
import pytest
import reference as ref

mp.mp.dps = 50
LOGITS = [-30.0, -17.4, -5.0, -1.0, 0.0, 0.5, 3.0, 16.7, 25.0]
TOL = 1e-13  # the closed forms are rounded to float64 (2.2e-16); numerical diff is ~40 digits


def sigma(x):
    return 1 / (1 + mp.exp(-x))


def bce(x, t):
    return -(t * mp.log(sigma(x)) + (1 - t) * mp.log(sigma(-x)))


def close(a, b):
    return abs(a - b) <= TOL * max(abs(b), mp.mpf(1e-300))


@pytest.mark.parametrize('gamma', [0.01, 0.5, 2.0])
@pytest.mark.parametrize('alpha', [None, 0.25])
def test_focal_derivative(gamma, alpha):
    for x, t in itertools.product(LOGITS, [0.0, 1.0, 0.3]):
        def loss(v, t=t):
            t, p = mp.mpf(t), sigma(v)
            a = 1 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
            return a * (1 - (p * t + (1 - p) * (1 - t))) ** gamma * bce(v, t)
        value, grad, _ = ref.focal_elem(x, t, gamma, alpha)
        assert close(value, loss(mp.mpf(x))), (x, t)
        assert close(grad, mp.diff(loss, mp.mpf(x))), (x, t)


@pytest.mark.parametrize('beta', [0.5, 2.0])
def test_quality_derivative(beta):
    for x, y in itertools.product(LOGITS, [0.0, 0.3, 0.9]):
        def loss(v, y=y):
            y = mp.mpf(y)
            return bce(v, y) * abs(y - sigma(v)) ** beta
        value, grad = ref.quality_elem(x, y, beta)
        assert close(value, loss(mp.mpf(x))), (x, y)
        assert close(grad, mp.diff(loss, mp.mpf(x))), (x, y)


@pytest.mark.parametrize('iou_weighted', [True, False])
@pytest.mark.parametrize('gamma', [0.5, 2.0])
def test_varifocal_derivative(iou_weighted, gamma):
    for x, t in itertools.product(LOGITS, [0.0, 0.4, 1.0]):
        def loss(v, t=t):
            t = mp.mpf(t)
            if t > 0:
                return (t if iou_weighted else 1) * bce(v, t)
            return 0.75 * abs(sigma(v) - t) ** gamma * bce(v, t)
        value, grad = ref.varifocal_elem(x, t, 0.75, gamma, iou_weighted)
        assert close(value, loss(mp.mpf(x))), (x, t)
        assert close(grad, mp.diff(loss, mp.mpf(x))), (x, t)


@pytest.mark.parametrize('gamma', [0.3, 2.0])
@pytest.mark.parametrize('alpha', [None, [0.2, 0.3, 0.5]])
def test_softmax_focal_gradient(gamma, alpha):
    for logits, label in [([0.5, -1.0, 2.0], 0), ([30.0, -5.0, 0.0], 0), ([30.0, -5.0, 0.0], 2),
                          ([-20.0, 20.0, 19.0], 1)]:
        def loss(*xs, label=label):
            z = mp.fsum(mp.exp(v) for v in xs)
            p = mp.exp(xs[label]) / z
            a = 1 if alpha is None else alpha[label]
            return -a * (1 - p) ** gamma * mp.log(p)
        value, grads = ref.softmax_focal_row(logits, label, gamma, alpha)
        point = [mp.mpf(v) for v in logits]
        assert close(value, loss(*point))
        for k in range(len(logits)):
            order = tuple(1 if j == k else 0 for j in range(len(logits)))
            assert close(grads[k], mp.diff(loss, point, order)), (logits, label, k)


# ---- derivatives with respect to the target: one-sided at t = 0 and t = 1 ----

def _target_diff(loss, t):
    """mpmath's derivative in t, one-sided at the ends of [0, 1] (log(t) is undefined past
    them)."""
    direction = 1 if t == 0 else -1 if t == 1 else 0
    return mp.diff(loss, mp.mpf(t), direction=direction)


@pytest.mark.parametrize('gamma', [0.01, 0.5, 2.0])
@pytest.mark.parametrize('alpha', [None, 0.25])
def test_focal_target_derivative(gamma, alpha):
    for x, t in itertools.product(LOGITS, [0.0, 1.0, 0.3]):
        def loss(s, x=x):
            p = sigma(mp.mpf(x))
            a = 1 if alpha is None else alpha * s + (1 - alpha) * (1 - s)
            return a * (1 - (p * s + (1 - p) * (1 - s))) ** gamma * bce(x, s)
        assert close(ref.focal_target_grad(x, t, gamma, alpha), _target_diff(loss, t)), (x, t)


@pytest.mark.parametrize('beta', [0.5, 2.0])
def test_quality_target_derivative(beta):
    for x, y in itertools.product(LOGITS, [0.0, 0.3, 0.9, 1.0]):
        def loss(s, x=x):
            return bce(mp.mpf(x), s) * abs(s - sigma(mp.mpf(x))) ** beta
        assert close(ref.quality_target_grad(x, y, beta), _target_diff(loss, y)), (x, y)


@pytest.mark.parametrize('gamma', [0.5, 2.0])
@pytest.mark.parametrize('iou_weighted', [True, False])
def test_varifocal_target_derivative(gamma, iou_weighted):
    for x, t in itertools.product(LOGITS, [0.0, 0.3, 1.0]):
        def loss(s, x=x, positive=t > 0):  # the branch that holds at t, continued
            x = mp.mpf(x)
            if positive:
                return (s if iou_weighted else 1) * bce(x, s)
            return 0.75 * abs(sigma(x) - s) ** gamma * bce(x, s)
        got = ref.varifocal_target_grad(x, t, 0.75, gamma, iou_weighted)
        assert close(got, _target_diff(loss, t)), (x, t)
