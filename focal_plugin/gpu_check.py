"""The CUDA path of the fused losses, checked in one short run: parity, speed and memory,
compilation, autocast. Needs only torch and :mod:`focal_plugin.functional` (no mmengine /
mmdet / mmcv), so it runs on a bare GPU machine with the working tree on ``PYTHONPATH``;
``tools/gpu_check.sh OUT_DIR`` is its command line.

On a machine without CUDA every section runs on the CPU at small sizes (so CI keeps the
script honest) and the CUDA-only measurements (CUDA events, ``max_memory_allocated``,
float16 GradScaler) say that they were skipped. Each section writes a Markdown table to the
output folder with the machine, torch version and command on top.

Sections:

* ``parity``: fused ``'exact'`` (compiled) vs the autograd ``'exact'`` formulation vs the
  original formula (``'none'``) against a float64 reference (the autograd ``'exact'``
  formulation in float64 on the CPU, itself checked against 50-digit mpmath values in
  ``tests/functional``): loss and gradient, float32/float16/bfloat16 logits up to +-1e4,
  gamma 0.01-5, hard and soft targets, QFL and VFL. Errors are relative, with the
  resolution of the returned dtype as floor (``|a - r| / max(|r|, eps max|r|, tiny)``; the
  loss is float32 for 16-bit logits, the gradient is in the logits' dtype).
* ``speed``: forward+backward median time and peak memory vs the autograd formulation,
  torchvision (when installed) and a copy of the logits (the bandwidth reference).
* ``compile``: first call of the ``'compile'`` backend, new graphs over 20 anchor counts,
  and the ``'auto'`` backend's background compilation in a fresh process (does it switch,
  are the values before and after the switch the same).
* ``autocast``: the loss under ``torch.autocast`` (float16 with a GradScaler, bfloat16):
  finite, and equal to the float32 run within the tolerance of the autocast dtype.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import torch

from focal_plugin.functional import (
    fused,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)

SECTIONS = ('parity', 'speed', 'compile', 'autocast')
HARD_POINTS = [1e4, 100.0, 20.0, 17.5, 16.7, 16.6, 10.0, 3.0, 1.0, 0.1, 0.0]


def log(message: str) -> None:
    print(f'[gpu_check {time.strftime("%H:%M:%S")}] {message}', flush=True)


def environment(device: str) -> List[str]:
    lines = [f'- torch {torch.__version__}, Python {platform.python_version()}, '
             f'{platform.platform()}']
    if device == 'cuda':
        props = torch.cuda.get_device_properties(0)
        lines.append(f'- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, '
                     f'compute capability {props.major}.{props.minor}, CUDA {torch.version.cuda}')
        try:
            import triton
            lines.append(f'- Triton {triton.__version__}')
        except ImportError:
            lines.append('- Triton: not installed')
    else:
        lines.append(f'- no CUDA device: CPU ({os.cpu_count()} cores, '
                     f'{torch.get_num_threads()} threads); CUDA-only figures skipped')
    return lines


def write_table(out_dir: str, name: str, title: str, header: List[str], rows: List[list],
                notes: List[str], env: List[str], command: str) -> str:
    path = os.path.join(out_dir, f'{name}.md')
    lines = [f'# {title}', '', f'Command: `{command}`', ''] + env + [''] + notes + ['']
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    log(f'wrote {path}')
    return path


# ------------------------------------------------------------------------------- parity
def parity_logits(n_random: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    points = torch.tensor(HARD_POINTS, dtype=torch.float64)
    points = torch.cat([points, -points, torch.randn(n_random, generator=g, dtype=torch.float64)
                        * 8])
    return points.to(device)


def loss_calls() -> Dict[str, Callable]:
    """name -> loss(x, targets, gamma, stabilizer), element-wise."""
    return {
        'focal': lambda x, t, gamma, mode: sigmoid_focal_loss(x, t, 0.25, gamma, 'none',
                                                              stabilizer=mode),
        'QFL': lambda x, t, gamma, mode: quality_focal_loss(x, t, gamma, 'none',
                                                            stabilizer=mode),
        'VFL': lambda x, t, gamma, mode: varifocal_loss(x, t, 0.75, gamma, True, 'none',
                                                        stabilizer=mode),
    }


def loss_and_grad(fn: Callable, x: torch.Tensor, t: torch.Tensor, gamma: float, mode: str,
                  backend: str):
    fused.set_fused_backend(backend)
    x = x.detach().clone().requires_grad_()
    loss = fn(x, t, gamma, mode)
    loss.sum().backward()
    return loss.detach(), x.grad


def relative_error(a: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> float:
    """Max relative error over the finite elements; below the resolution of ``dtype`` (the
    dtype the value was returned in) relative to the largest value, or its smallest normal
    number, errors are measured against that floor instead (float16 gradients of 1e-9
    underflow to 0, which is the dtype's limit, not an error of the loss)."""
    finite = torch.isfinite(a) & torch.isfinite(ref)
    if not finite.any():
        return float('nan')
    info = torch.finfo(dtype)
    floor = max(float(ref[finite].abs().max()) * info.eps, info.tiny)
    return float(((a - ref).abs() / ref.abs().clamp(min=floor))[finite].max())


def parity(device: str, quick: bool) -> tuple:
    gammas = [0.01, 0.5, 2.0] if quick else [0.01, 0.25, 0.5, 0.9, 1.0, 2.0, 5.0]
    dtypes = [torch.float32, torch.float16, torch.bfloat16]
    variants = [('fused exact', 'exact', 'compile'), ('autograd exact', 'exact', 'off'),
                ('original (none)', 'none', 'off')]
    base = parity_logits(64 if quick else 4000, device)
    g = torch.Generator().manual_seed(1)
    rows = []
    for loss_name, fn in loss_calls().items():
        for soft in (False, True):
            if loss_name != 'focal' and not soft:
                continue  # QFL/VFL take scores
            for dtype in dtypes:
                x = base.to(dtype)
                if soft:
                    t = torch.rand(x.shape, generator=g, dtype=torch.float64)
                    t[::3] = 0.0  # negatives, as in detection
                    t = t.to(device)
                else:
                    t = (torch.arange(x.numel(), device=device) % 2 == 0).double()
                for gamma in gammas:
                    # from the same rounded inputs (float32 targets, low-precision logits)
                    ref_loss, ref_grad = loss_and_grad(fn, x.double().cpu(),
                                                       t.float().double().cpu(), gamma,
                                                       'exact', 'off')
                    for label, mode, backend in variants:
                        tt = t.to(torch.float32 if dtype != torch.float64 else dtype)
                        tt = tt if soft else tt.bool() if mode == 'exact' else tt
                        loss, grad = loss_and_grad(fn, x, tt, gamma, mode, backend)
                        loss_err = relative_error(loss.double().cpu(), ref_loss, loss.dtype)
                        grad_err = relative_error(grad.double().cpu(), ref_grad, grad.dtype)
                        rows.append([loss_name, 'soft' if soft else 'hard',
                                     str(dtype).replace('torch.', ''), gamma, label,
                                     f'{loss_err:.1e}', f'{grad_err:.1e}',
                                     int((~torch.isfinite(loss)).sum()),
                                     int((~torch.isfinite(grad)).sum())])
        log(f'parity: {loss_name} done ({len(rows)} rows)')
    header = ['loss', 'targets', 'logits dtype', 'gamma', 'variant', 'max rel err loss',
              'max rel err grad', 'non-finite loss', 'non-finite grad']
    notes = [f'{base.numel()} logits per case: +-{HARD_POINTS} and random N(0, 8^2); '
             'reference: the autograd exact formulation in float64 on the CPU, from the '
             'same (rounded) low-precision logits. Errors over finite elements; the '
             'original formula\'s NaN gradients are counted, not measured.']
    return header, rows, notes


# -------------------------------------------------------------------------------- speed
def timer(device: str) -> Callable:
    """seconds(fn): one call, timed with CUDA events on CUDA."""
    if device == 'cuda':
        def seconds(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        return seconds

    def seconds(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return seconds


def speed_variants() -> Dict[str, Callable]:
    def ours(backend):
        def run(x, t_bool, t_float):
            fused.set_fused_backend(backend)
            sigmoid_focal_loss(x, t_bool, 0.25, 2.0, 'sum').backward()
        return run

    def original(x, t_bool, t_float):
        try:
            from torchvision.ops import sigmoid_focal_loss as tv
        except ImportError:  # the same formula, ours
            tv = None
        if tv is not None:
            tv(x, t_float, alpha=0.25, gamma=2.0, reduction='sum').backward()
        else:
            sigmoid_focal_loss(x, t_float, 0.25, 2.0, 'sum', stabilizer='none').backward()

    def copy(x, t_bool, t_float):
        x.detach().clone()

    return {'fused exact (compiled)': ours('compile'), 'autograd exact': ours('off'),
            'torchvision (original formula)': original, 'copy of the logits': copy}


def speed(device: str, quick: bool) -> tuple:
    sizes = ([10**4, 10**6] if quick else [10**4, 10**6, 10**7]) if device == 'cpu' else \
        [10**4, 10**6, 10**7, 10**8]
    repeats, warmups = (5, 2) if quick else (20, 3)
    seconds = timer(device)
    rows = []
    for n in sizes:
        g = torch.Generator().manual_seed(n % 1000)
        x = (torch.randn(n, generator=g) * 3).to(device).requires_grad_()
        t_bool = (torch.rand(n, generator=g) < 0.01).to(device)
        t_float = t_bool.float()
        times = {}
        peaks = {}
        for name, fn in speed_variants().items():
            def call(fn=fn, args=(x, t_bool, t_float)):
                args[0].grad = None
                fn(*args)
            for _ in range(warmups):
                call()
            times[name] = statistics.median(seconds(call) for _ in range(repeats))
            if device == 'cuda':
                torch.cuda.synchronize()
                start = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                call()
                torch.cuda.synchronize()
                peaks[name] = (torch.cuda.max_memory_allocated() - start) / 2**20
        copy_bw = 2 * x.numel() * x.element_size() / times['copy of the logits']
        for name, t in times.items():
            # fused: reads logits + targets, writes the gradient
            moved = x.numel() * (2 * x.element_size() + t_bool.element_size())
            rows.append([f'{n:.0e}', name, f'{t * 1e3:.3f}',
                         f'{t / times["torchvision (original formula)"]:.2f}',
                         f'{peaks[name]:.1f}' if peaks else 'CUDA only',
                         f'{moved / t / 1e9:.1f}' if 'copy' not in name else
                         f'{copy_bw / 1e9:.1f} (copy)',
                         f'{moved / t / copy_bw:.2f}' if 'copy' not in name else '1.00'])
        log(f'speed: {n:.0e} logits done')
    header = ['logits', 'variant', 'fwd+bwd ms (median)', 'x torchvision',
              'peak MB above inputs', 'GB/s (logits + targets + grad)', 'x copy bandwidth']
    notes = [f'gamma 2, alpha 0.25, 1 % positives, reduction sum; median of {repeats} after '
             f'{warmups} warm-ups; {"CUDA events" if device == "cuda" else "perf_counter"}. '
             'Copy bandwidth = 2 x logits bytes / copy time.']
    return header, rows, notes


# ------------------------------------------------------------------------------ compile
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


# ----------------------------------------------------------------------------- autocast
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
        finite = bool(torch.isfinite(grad).all()) and loss == loss
        rows.append([f'{str(dtype)[6:]}{" + GradScaler" if dtype == torch.float16 else ""}',
                     str(logits_dtype)[6:], f'{rel_loss:.1e}', f'{rel_grad:.1e}', finite,
                     'yes' if finite and rel_loss < tol and rel_grad < tol else f'NO (tol {tol})'])
    header = ['autocast dtype', 'logits dtype', 'rel. diff loss vs float32',
              'rel. diff grad (L2) vs float32', 'finite', 'within tolerance']
    notes = ['Linear(64, 80) with weights x30 (saturating logits), 4096 samples, gamma 0.5, '
             'exact loss, backend from FOCAL_PLUGIN_FUSED (auto unless set); gradient of the '
             'weight, unscaled.']
    return header, rows, notes


# --------------------------------------------------------------------------------- main
def run(out_dir: str, sections=SECTIONS, quick: bool = False, command: str = '') -> List[str]:
    """Run the sections, write one Markdown table each to ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu':
        log('CUDA is not available: running every section on the CPU at small sizes; the '
            'CUDA-only measurements (CUDA events, max_memory_allocated, float16 GradScaler) '
            'are skipped')
    env = environment(device)
    for line in env:
        log(line)
    titles = dict(parity='Parity of the fused losses', speed='Speed and peak memory',
                  compile='Compilation', autocast='Autocast')
    paths = []
    backend = fused.get_fused_backend()  # each section sets the backends it compares
    for section in sections:
        log(f'{section}: start')
        started = time.perf_counter()
        if section == 'parity':
            header, rows, notes = parity(device, quick)
        elif section == 'speed':
            header, rows, notes = speed(device, quick)
        elif section == 'compile':
            header, rows, notes = compile_check(device, quick, sys.executable)
        else:
            header, rows, notes = autocast_check(device, quick)
        wall = time.perf_counter() - started
        notes = notes + [f'Device: {device}. Section wall time {wall:.0f} s.']
        paths.append(write_table(out_dir, section, f'{titles[section]} ({device})', header,
                                 rows, notes, env, command))
        fused.set_fused_backend(backend)
    return paths


if __name__ == '__main__':  # the fresh-process probe of the compile section
    if len(sys.argv) == 3 and sys.argv[1] == '--probe-auto':
        print(json.dumps(probe_auto(sys.argv[2])))
    else:
        raise SystemExit('usage: tools/gpu_check.sh OUT_DIR [options]')
