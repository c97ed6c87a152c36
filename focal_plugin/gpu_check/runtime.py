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


def probe_cliff(device: str, first: int, timed: int) -> dict:
    """In a fresh process (compiler cache as found): one call at ``first`` logits, then the
    median forward+backward time at ``timed`` for each reduction. A kernel tuned to the size of
    its first call would be slower here than in a process whose first call was ``timed``."""
    from .speed import timer
    seconds = timer(device)
    g = torch.Generator().manual_seed(0)
    warm = (torch.randn(first, generator=g) * 3).to(device).requires_grad_()
    sigmoid_focal_loss(warm, (warm.detach() > 2), 0.25, 2.0, 'sum').backward()
    x = (torch.randn(timed, generator=g) * 3).to(device).requires_grad_()
    t = (torch.rand(timed, generator=g) < 0.01).to(device)
    out = {}
    for reduction in ('sum', 'mean', 'none'):
        def call(reduction=reduction):
            x.grad = None
            loss = sigmoid_focal_loss(x, t, 0.25, 2.0, reduction)
            (loss if loss.dim() == 0 else loss.sum()).backward()
        call()
        out[reduction] = sorted(seconds(call) for _ in range(7))[3] * 1e3
    return out


def cliff_rows(device: str, quick: bool, command_python: str) -> list:
    """The cliff of issue 20 as rows: ms per call at the large size after a first call at the
    small one, and after a first call at the large one, each in a fresh process."""
    small, large = (10**3, 10**6) if device == 'cpu' else (10**4, 10**8)
    probes = {}
    for first in (small, large):
        res = subprocess.run([command_python, '-m', 'focal_plugin.gpu_check', '--probe-cliff',
                              device, str(first), str(large)], capture_output=True, text=True,
                             timeout=600)
        if res.returncode != 0:
            return [['cliff probe', f'FAILED: {res.stderr.strip()[-300:]}']]
        probes[first] = json.loads(res.stdout.strip().splitlines()[-1])
    rows = []
    for reduction in probes[small]:
        after_small, after_large = probes[small][reduction], probes[large][reduction]
        rows.append([f'cliff ({reduction}): ms at {large:.0e} after a first call at {small:.0e} '
                     f'/ at {large:.0e}', f'{after_small:.3f} / {after_large:.3f} '
                     f'({after_small / after_large:.2f}x)'])
    return rows


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
    rows += cliff_rows(device, quick, command_python)
    header = ['check', 'result']
    notes = ['First calls in this process (compiler cache as found). Cliff rows: two fresh '
             'processes, default backend, gamma 2, 1 % positives, median of 7 (a ratio near 1: '
             'no call is slowed by what the process computed before). The auto probe runs '
             '20000 x 80 logits, gamma 0.5, sleeping 50 ms between steps until the '
             'background-compiled kernel serves a call.']
    return header, rows, notes


def scaler_loop(device: str, steps: int = 30) -> dict:
    """float16 autocast with a GradScaler, judged as a training loop is: ``steps`` steps of
    ``scale(loss).backward()`` / ``unscale_`` / ``step`` / ``update`` on one model. Early
    steps are skipped while the scale backs off from 65536 (the scaler's normal start); what
    counts is that steps are taken after it and the loss falls."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4096, 64, generator=g).to(device)
    targets = (torch.rand(4096, 80, generator=g) < 0.02).to(device)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 80).to(device)
    with torch.no_grad():
        model.weight.mul_(30)  # saturating logits, where the original formula breaks
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device)
    skipped, losses, first_taken = 0, [], None
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.float16):
            loss = sigmoid_focal_loss(model(features), targets, 0.25, 0.5, 'mean')
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped += not finite
        if finite and first_taken is None:
            first_taken = step
        losses.append(float(loss))
    after = losses[first_taken:] if first_taken is not None else []
    return dict(skipped=skipped, first_taken=first_taken, final_scale=scale,
                loss_first_taken=after[0] if after else math.nan,
                loss_last=losses[-1], falls=bool(after) and after[-1] < after[0],
                all_finite_loss=all(math.isfinite(v) for v in losses))


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
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(features)
            loss = sigmoid_focal_loss(logits, targets, 0.25, 0.5, 'sum')
        loss.backward()
        return float(loss.detach()), model.weight.grad, logits.dtype

    ref_loss, ref_grad, _ = run(torch.float32)
    for dtype, tol in ((torch.bfloat16, 5e-2), (torch.float16, 1e-2)):
        if dtype == torch.float16 and device == 'cpu':
            rows.append(['float16 + GradScaler', 'skipped: CUDA only', '', '', '', ''])
            continue
        if dtype == torch.float16:
            loop = scaler_loop(device)
            ok = loop['falls'] and loop['all_finite_loss'] and loop['first_taken'] is not None
            rows.append(['float16 + GradScaler', 'float16',
                         f"{loop['skipped']} skipped steps (scale backed off to "
                         f"{loop['final_scale']:g})",
                         f"loss {loop['loss_first_taken']:.4g} at the first step taken -> "
                         f"{loop['loss_last']:.4g}", loop['all_finite_loss'],
                         'yes' if ok else 'NO'])
            continue
        loss, grad, logits_dtype = run(dtype)
        rel_loss = abs(loss - ref_loss) / abs(ref_loss)
        rel_grad = float((grad - ref_grad).norm() / ref_grad.norm())
        finite = bool(torch.isfinite(grad).all()) and math.isfinite(loss)
        rows.append([str(dtype)[6:], str(logits_dtype)[6:], f'{rel_loss:.1e}',
                     f'{rel_grad:.1e}', finite,
                     'yes' if finite and rel_loss < tol and rel_grad < tol else f'NO (tol {tol})'])
    header = ['autocast dtype', 'logits dtype', 'rel. diff loss vs float32',
              'rel. diff grad (L2) vs float32', 'finite', 'within tolerance']
    notes = ['Linear(64, 80) with weights x30 (saturating logits), 4096 samples, gamma 0.5, '
             'exact loss, backend from FOCAL_PLUGIN_FUSED (compile unless set); gradient of '
             'the weight, unscaled. One scaled step cannot judge a GradScaler (its scale starts '
             'at 65536 and backs off on inf gradients by design): the loop row runs 30 SGD '
             "steps (the float16 row's columns 3-4 hold the loop's counts) and passes when "
             'steps are taken after the back-off and the loss falls.']
    return header, rows, notes
