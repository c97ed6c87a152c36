"""The ``compile`` and ``autocast`` sections: first calls, recompilation, the background
backend's switch, and the loss under ``torch.autocast``."""
from __future__ import annotations

import json
import math
import subprocess
import time

import torch

from focal_plugin.functional import fused, sigmoid_focal_loss

from ._common import log


def probe_auto(device: str) -> dict:
    """In a fresh process: the 'auto' backend serves the autograd formulation until its
    background compilation is ready, then switches; the values must agree across the switch."""
    fused.set_fused_backend('auto')
    g = torch.Generator().manual_seed(0)
    x0 = (torch.randn(20_000, 80, generator=g) * 3).to(device)
    t = (torch.rand(20_000, 80, generator=g) < 0.01).to(device)
    losses, served, grads = [], [], []
    start = time.perf_counter()
    for step in range(2000):
        x = x0.clone().requires_grad_()
        served.append(fused.fused_kernel(x, t) is not None)
        loss = sigmoid_focal_loss(x, t, 0.25, 0.5, 'sum')
        loss.backward()
        losses.append(float(loss))
        grads.append(x.grad)
        if served[-1] and step >= 3 and sum(served) >= 3:
            break
        time.sleep(0.05)
    switch = served.index(True) if True in served else None
    out = dict(steps=len(served), switched_at_step=switch,
               seconds_to_switch=time.perf_counter() - start if switch is not None else None)
    if switch is not None and switch > 0:
        ref, fus = losses[switch - 1], losses[switch]
        out['loss_rel_diff_across_switch'] = abs(fus - ref) / abs(ref)
        out['grad_max_abs_diff_across_switch'] = float((grads[switch] - grads[switch - 1])
                                                       .abs().max())
    return out


def compile_check(device: str, quick: bool, command_python: str) -> tuple:
    from torch._dynamo.utils import counters
    rows = []
    fused.set_fused_backend('compile')
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    for step in range(2):
        x = torch.randn(10_000, 80, generator=g).to(device).requires_grad_()
        t = (torch.rand(10_000, 80, generator=g) < 0.01).to(device)
        start = time.perf_counter()
        sigmoid_focal_loss(x, t, 0.25, 2.0, 'sum').backward()
        if device == 'cuda':
            torch.cuda.synchronize()
        rows.append([f'compile backend, call {step + 1}',
                     f'{time.perf_counter() - start:.2f} s'])
    graphs = counters['stats']['unique_graphs']
    counts = 5 if quick else 20
    for step in range(counts):  # anchor counts change every step, as in detection training
        anchors = 6_000 + 4_999 * step
        x = torch.randn(anchors, 80, generator=g).to(device).requires_grad_()
        t = (torch.rand(anchors, 80, generator=g) < 0.01).to(device)
        sigmoid_focal_loss(x, t, 0.25, 2.0, 'sum').backward()
    rows.append([f'new graphs over {counts} anchor counts',
                 counters['stats']['unique_graphs'] - graphs])
    log('compile: compile backend done; probing the auto backend in a fresh process')
    res = subprocess.run([command_python, '-m', 'focal_plugin.gpu_check', '--probe-auto',
                          device], capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        rows.append(['auto backend probe', f'FAILED: {res.stderr.strip()[-300:]}'])
    else:
        probe = json.loads(res.stdout.strip().splitlines()[-1])
        for key, value in probe.items():
            rows.append([f'auto backend: {key.replace("_", " ")}',
                         f'{value:.3g}' if isinstance(value, float) else value])
    header = ['check', 'result']
    notes = ['First calls in this process (compiler cache as found). The auto probe runs '
             '20000 x 80 logits, gamma 0.5, sleeping 50 ms between steps until the '
             'background-compiled kernel serves a call.']
    return header, rows, notes


def autocast_check(device: str, quick: bool) -> tuple:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4096, 64, generator=g).to(device)
    targets = (torch.rand(4096, 80, generator=g) < 0.02).to(device)
    rows = []

    def run(dtype):
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 80).to(device)
        with torch.no_grad():
            model.weight.mul_(30)  # saturating logits, where the original formula breaks
        scaler = None
        if dtype == torch.float16:
            scaler = torch.amp.GradScaler(device)
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(features)
            loss = sigmoid_focal_loss(logits, targets, 0.25, 0.5, 'sum')
        (scaler.scale(loss) if scaler else loss).backward()
        grad = model.weight.grad
        if scaler is not None:
            grad = grad / scaler.get_scale()
        return float(loss.detach()), grad, logits.dtype

    ref_loss, ref_grad, _ = run(torch.float32)
    for dtype, tol in ((torch.bfloat16, 5e-2), (torch.float16, 1e-2)):
        if dtype == torch.float16 and device == 'cpu':
            rows.append(['float16 + GradScaler', 'skipped: CUDA only', '', '', '', ''])
            continue
        loss, grad, logits_dtype = run(dtype)
        rel_loss = abs(loss - ref_loss) / abs(ref_loss)
        rel_grad = float((grad - ref_grad).norm() / ref_grad.norm())
        finite = bool(torch.isfinite(grad).all()) and math.isfinite(loss)
        rows.append([f'{str(dtype)[6:]}{" + GradScaler" if dtype == torch.float16 else ""}',
                     str(logits_dtype)[6:], f'{rel_loss:.1e}', f'{rel_grad:.1e}', finite,
                     'yes' if finite and rel_loss < tol and rel_grad < tol else f'NO (tol {tol})'])
    header = ['autocast dtype', 'logits dtype', 'rel. diff loss vs float32',
              'rel. diff grad (L2) vs float32', 'finite', 'within tolerance']
    notes = ['Linear(64, 80) with weights x30 (saturating logits), 4096 samples, gamma 0.5, '
             'exact loss, backend from FOCAL_PLUGIN_FUSED (auto unless set); gradient of the '
             'weight, unscaled.']
    return header, rows, notes
