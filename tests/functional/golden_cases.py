"""Float64 outputs and gradients of every public loss, recorded once so that a refactor can
prove it changed nothing (bit for bit). ``test_golden_float64.py`` recomputes and compares.

Record (only when a change of values is intended, and say so in the commit):
    .venv/bin/python tests/functional/golden_cases.py
"""
import itertools
import os.path as osp

import torch

from focal_plugin.functional import (
    asymmetric_focal_loss,
    focal_tversky_loss,
    fused,
    quality_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
    unified_focal_loss,
    varifocal_loss,
)

GOLDEN_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'golden_float64.pt')
MODES = ('exact', 'epsilon', 'none')


def inputs():
    g = torch.Generator().manual_seed(0)
    points = torch.tensor([1e4, 100.0, 20.0, 17.5, 16.7, 10.0, 3.0, 1.0, 0.1, 0.0],
                          dtype=torch.float64)
    x = torch.cat([points, -points, torch.randn(44, generator=g, dtype=torch.float64) * 6])
    hard = (torch.arange(x.numel()) % 3 == 0).double()
    soft = torch.rand(x.numel(), generator=g, dtype=torch.float64)
    soft[::4] = 0.0
    cls_x = torch.randn(8, 4, generator=g, dtype=torch.float64) * 5
    cls_x[0, 0] = 40.0  # a saturated softmax row
    labels = torch.randint(0, 4, (8,), generator=g)
    seg_x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) * 5
    seg_t = torch.randint(0, 3, (2, 4, 4), generator=g)
    return dict(x=x, hard=hard, soft=soft, cls_x=cls_x, labels=labels, seg_x=seg_x,
                seg_t=seg_t)


def cases(d):
    """name -> (logits, call(logits) -> loss, backend)."""
    out = {}
    x, hard, soft = d['x'], d['hard'], d['soft']
    for mode, gamma, alpha, kind, activated in itertools.product(
            MODES, (0.0, 0.01, 0.5, 2.0), (0.25, None), ('hard', 'soft'), (False, True)):
        t = hard if kind == 'hard' else soft
        for backend in (('off', 'eager') if mode == 'exact' and not activated else ('off',)):
            name = f'sigmoid_focal {mode} g{gamma} a{alpha} {kind} act{activated} {backend}'
            out[name] = (x.sigmoid() if activated else x, lambda v, t=t, m=mode, g=gamma,
                         a=alpha, act=activated: sigmoid_focal_loss(
                             v, t, a, g, 'none', stabilizer=m, activated=act), backend)
    for mode, beta, activated in itertools.product(MODES, (0.5, 2.0), (False, True)):
        for backend in (('off', 'eager') if mode == 'exact' and not activated else ('off',)):
            out[f'qfl {mode} b{beta} act{activated} {backend}'] = (
                x.sigmoid() if activated else x, lambda v, m=mode, b=beta, act=activated:
                quality_focal_loss(v, soft, b, 'none', activated=act, stabilizer=m), backend)
    for mode, gamma, iou_weighted in itertools.product(MODES, (0.5, 2.0), (True, False)):
        for backend in (('off', 'eager') if mode == 'exact' else ('off',)):
            out[f'vfl {mode} g{gamma} iou{iou_weighted} {backend}'] = (
                x, lambda v, m=mode, g=gamma, w=iou_weighted: varifocal_loss(
                    v, soft, 0.75, g, w, 'none', stabilizer=m), backend)
    for mode, gamma, alpha, smoothing in itertools.product(
            MODES, (0.5, 2.0), (None, [0.1, 0.2, 0.3, 0.4]), (0.0, 0.1)):
        out[f'softmax_focal {mode} g{gamma} a{alpha} ls{smoothing}'] = (
            d['cls_x'], lambda v, m=mode, g=gamma, a=alpha, ls=smoothing: softmax_focal_loss(
                v, d['labels'], a, g, 'none', label_smoothing=ls, stabilizer=m), 'off')
    for mode, fn_name in itertools.product(MODES, ('asymmetric', 'tversky', 'unified_asym',
                                                   'unified_sym')):
        def call(v, m=mode, f=fn_name):
            if f == 'asymmetric':
                return asymmetric_focal_loss(v, d['seg_t'], gamma=0.5, stabilizer=m)
            if f == 'tversky':
                return focal_tversky_loss(v, d['seg_t'], gamma=0.5, stabilizer=m)
            return unified_focal_loss(v, d['seg_t'], gamma=0.5, stabilizer=m,
                                      variant='asymmetric' if f == 'unified_asym'
                                      else 'symmetric')
        out[f'{fn_name} {mode}'] = (d['seg_x'], call, 'off')
    return out


def compute(name, logits, call, backend):
    before = fused.get_fused_backend()
    fused.set_fused_backend(backend)
    try:
        v = logits.detach().clone().requires_grad_()
        loss = call(v)
        loss.sum().backward()
        return loss.detach(), v.grad
    finally:
        fused.set_fused_backend(before)


def record():
    d = inputs()
    golden = {name: compute(name, *case) for name, case in cases(d).items()}
    torch.save(dict(inputs=d, values=golden), GOLDEN_FILE)
    print(f'recorded {len(golden)} cases to {GOLDEN_FILE}')


if __name__ == '__main__':
    torch.set_num_threads(1)
    record()
