"""Forward+backward time and peak memory of the sigmoid focal loss: ours (fused, reference
autograd, epsilon, none) vs torchvision and mmdet's Python path, with two references measured
in the same run: a plain copy of the logits (memory-bandwidth bound) and one fully fused pass
of the same forward+backward formula (the package's hard-label kernel compiled and called
directly, without the autograd function around it: the practical CPU limit, since the loss is
bound by exp/log1p, not memory).

    .venv/bin/python tools/benchmark_losses.py --threads 1 2 --repeats 7 \\
        --out work_dirs/benchmark_losses.md
    .venv/bin/python tools/benchmark_losses.py --sizes 1e4 --threads 1 --repeats 1  # a smoke run

Targets are RetinaNet-style one-hot labels over 80 classes (bool for ours, as StableFocalLoss
passes them; float 0/1 for torchvision and mmdet). Time: median wall time of forward +
backward; variants run round-robin so drift hits all alike. Peak memory: the highest total of
live CPU allocations during one forward+backward, from ``torch.profiler`` allocation events
(``profile_memory=True``); the logits, targets and the accumulated ``.grad`` buffer are
included for every variant alike. GPU rows are added when CUDA is available (peak from
``torch.cuda.max_memory_allocated``).

``--first-call`` adds how long the first call takes in a fresh process (cold and warm
compiler cache) for the 'auto' and 'compile' backends, and counts compilations while the
anchor count changes every step.

Only the tables go to the terminal. What the libraries write to stderr while the tool measures
goes to a log file (``--log``; by default beside ``--out``, ``<out>.profiler.log``, else in the
temporary folder), and the last line of the output says where and how many lines it holds.
On the CPU that is mostly ``torch.profiler``'s native library, kineto: two ``USDT:`` lines
(``profiler_start``, ``profiler_stop``) per profiled forward+backward, one per variant and
size. On a machine without an NVIDIA driver kineto also logs, once per process, ``ERROR: ...
gpuGetDeviceCount failed with code 35``: 35 is ``cudaErrorInsufficientDriver``, the CUDA
build of torch asking for GPU properties to put in the trace where there is no driver. It is
harmless here (only CPU activity is profiled, CUDA is not available) and is counted, not
shown; any other ``ERROR`` line in the log is printed (to stderr) at the end of the run. The
compiler adds, once, ``No CUDA runtime is found, using CUDA_HOME=...`` on such a machine (from
``torch.utils.cpp_extension``; the CPU kernels need no CUDA).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict

import torch
import torch.nn.functional as F

from focal_plugin.cli import HelpFormatter, stderr_to
from focal_plugin.functional import (
    compile_backend,
    fused,
    fused_kernels,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)
from focal_plugin.functional import targets as target_check
from focal_plugin.gpu_check._common import cpu_allocation_peak

NUM_CLASSES = 80
ANCHORS = [125, 1250, 2000, 12500, 125000]  # x 80 classes: 1e4 ... 1e7 elements (--sizes)
GAMMA, ALPHA = 2.0, 0.25


def torchvision_loss(x, t_bool, t_float):
    from torchvision.ops import sigmoid_focal_loss as tv
    return tv(x, t_float, alpha=ALPHA, gamma=GAMMA, reduction='sum')


def mmdet_loss(x, t_bool, t_float):
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    return py_sigmoid_focal_loss(x, t_float, gamma=GAMMA, alpha=ALPHA, reduction='sum')


def ours(stabilizer: str, backend: str) -> Callable:
    def run(x, t_bool, t_float):
        fused.set_fused_backend(backend)
        targets = t_bool if stabilizer == 'exact' else t_float
        return sigmoid_focal_loss(x, targets, ALPHA, GAMMA, 'sum', stabilizer=stabilizer)
    return run


def _one_pass(x, positive, a_pos, a_neg, gamma):
    loss, grad = fused_kernels.hard_loss_and_grad(x, positive, a_pos, a_neg, gamma)
    return loss.sum(), grad


# The package's own hard-label kernel with the sum compiled into it, called directly: what
# the fused loss costs without the autograd.Function around it and without writing the
# element-wise loss (the package no longer compiles the sum into its kernels: that made the
# speed depend on the first call's size, see fused.fused_loss).
_COMPILED_PASS = torch.compile(_one_pass, dynamic=True)


def fused_pass_reference(x, t_bool, t_float):
    loss, grad = _COMPILED_PASS(x.detach().reshape(-1), t_bool.reshape(-1), ALPHA, 1 - ALPHA,
                                GAMMA)
    x.grad = grad.view(x.shape)
    return None


def copy_reference(x, t_bool, t_float):
    x.detach().clone()
    return None


VARIANTS: Dict[str, Callable] = {
    'torchvision sigmoid_focal_loss': torchvision_loss,
    'mmdet py_sigmoid_focal_loss': mmdet_loss,
    'ours exact, fused (compiled)': ours('exact', 'compile'),
    'ours exact, fused (eager kernels)': ours('exact', 'eager'),
    'ours exact, autograd reference': ours('exact', 'off'),
    'ours epsilon': ours('epsilon', 'off'),
    'ours none': ours('none', 'off'),
    'reference: one fused pass (compiled)': fused_pass_reference,
    'reference: copy of the logits': copy_reference,
}
BASE = 'torchvision sigmoid_focal_loss'


def fwd_bwd(fn, x, t_bool, t_float) -> None:
    x.grad = None
    loss = fn(x, t_bool, t_float)
    if loss is not None:
        loss.backward()


def seconds(fn, *args) -> float:
    sync = torch.cuda.synchronize if args[0].is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    fwd_bwd(fn, *args)
    sync()
    return time.perf_counter() - start


def peak_bytes(fn, x, t_bool, t_float) -> int:
    """Peak of live allocations during one fwd+bwd (inputs included, counted at start)."""
    base = sum(v.untyped_storage().nbytes() for v in (x, t_bool, t_float) if v is not None)
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        fwd_bwd(fn, x, t_bool, t_float)
        return base + torch.cuda.max_memory_allocated() - start
    x.grad = None
    return base + cpu_allocation_peak(lambda: fwd_bwd(fn, x, t_bool, t_float))


def mmdet_qfl(x, scores, _):
    from mmdet.models.losses.gfocal_loss import quality_focal_loss_tensor_target
    return quality_focal_loss_tensor_target(x, scores, beta=GAMMA, reduction='sum')


def with_backend(backend: str, loss_fn: Callable, *args, check_targets: bool = True) -> Callable:
    """``loss_fn(logits, scores, *args)`` run with the given fused backend and the [0, 1]
    target check on or off."""
    def run(x, scores, _):
        fused.set_fused_backend(backend)
        target_check.set_target_check(check_targets)
        try:
            return loss_fn(x, scores, *args)
        finally:
            target_check.set_target_check(True)
    return run


# QFL (GFL's classification loss): dense IoU-quality scores, 1 % of the pairs positive
QFL_VARIANTS: Dict[str, Callable] = {
    'mmdet quality_focal_loss_tensor_target': mmdet_qfl,
    'ours QFL exact, fused (compiled)': with_backend('compile', quality_focal_loss, GAMMA, 'sum'),
    'ours QFL exact, autograd reference': with_backend('off', quality_focal_loss, GAMMA, 'sum'),
}


def mmdet_vfl(x, scores, _):
    from mmdet.models.losses.varifocal_loss import varifocal_loss as vfl
    return vfl(x, scores, alpha=0.75, gamma=GAMMA, reduction='sum')


VFL_ARGS = (0.75, GAMMA, True, 'sum')  # alpha, gamma, iou_weighted, reduction
VFL_VARIANTS: Dict[str, Callable] = {
    'mmdet varifocal_loss': mmdet_vfl,
    'ours VFL exact, fused (compiled)': with_backend('compile', varifocal_loss, *VFL_ARGS),
    'ours VFL exact, autograd reference': with_backend('off', varifocal_loss, *VFL_ARGS),
}


def the_check_alone(x, t, _):
    target_check.check_probability_targets(t)
    return None


def target_check_sections() -> list:
    """(title, variants, targets) of the target-check cost: per loss, check off (the base),
    on, and the check alone."""
    def variants(loss_fn, *args):
        return {'check off': with_backend('compile', loss_fn, *args, check_targets=False),
                'check on': with_backend('compile', loss_fn, *args, check_targets=True),
                'the check alone (aminmax + one host sync)': the_check_alone}

    def float_labels(anchors, g, device):
        return focal_targets(anchors, g, device)[1], None
    focal_args = (ALPHA, GAMMA, 'sum')
    return [('sigmoid focal, float 0/1 targets (hard-label detection shares the sync)',
             variants(sigmoid_focal_loss, *focal_args), float_labels),
            ('sigmoid focal, soft targets', variants(sigmoid_focal_loss, *focal_args),
             quality_targets),
            ('QFL', variants(quality_focal_loss, GAMMA, 'sum'), quality_targets),
            ('VFL', variants(varifocal_loss, *VFL_ARGS), quality_targets)]


def focal_targets(anchors, g, device):
    labels = torch.randint(0, NUM_CLASSES + 1, (anchors,), generator=g)
    t_bool = F.one_hot(labels, NUM_CLASSES + 1)[:, :NUM_CLASSES].bool().to(device)
    return t_bool, t_bool.float()


def quality_targets(anchors, g, device):
    scores = torch.zeros(anchors * NUM_CLASSES)
    positive = torch.randint(0, scores.numel(), (scores.numel() // 100,), generator=g)
    scores[positive] = torch.rand(positive.numel(), generator=g)
    return scores.view(anchors, NUM_CLASSES).to(device), None


def measure(device: str, threads: int, repeats: int, variants=None, targets=focal_targets,
            anchor_counts=ANCHORS) -> list:
    variants = variants or VARIANTS
    base = next(iter(variants))
    torch.set_num_threads(threads)
    rows = []
    for anchors in anchor_counts:
        g = torch.Generator().manual_seed(anchors)
        x = (torch.randn(anchors, NUM_CLASSES, generator=g) * 3).to(device).requires_grad_()
        args = (x, *targets(anchors, g, device))
        values = {}
        for name, fn in variants.items():  # warm-up (and compilation) outside the timing
            fwd_bwd(fn, *args)
            out = fn(*args)
            if out is not None:
                values[name] = float(out.detach())
        for name, value in values.items():  # every variant computes the same loss
            shifted = 'epsilon' in name  # (1 - p_t + eps)**gamma: a different loss by design
            if not shifted and abs(value - values[base]) > 1e-4 * abs(values[base]):
                raise SystemExit(f'{name} computes {value}, {base} {values[base]}')
        times = {name: [] for name in variants}
        for _ in range(repeats):
            for name, fn in variants.items():
                times[name].append(seconds(fn, *args))
        peaks = {name: peak_bytes(fn, *args) for name, fn in variants.items()}
        for name in variants:
            med = statistics.median(times[name])
            rows.append(dict(device=device, threads=threads, elements=x.numel(),
                             shape=f'{anchors} x {NUM_CLASSES}', variant=name,
                             ms=med * 1e3, time_ratio=med / statistics.median(times[base]),
                             peak_mb=peaks[name] / 2**20, mem_ratio=peaks[name] / peaks[base],
                             melem_s=x.numel() / med / 1e6))
            print(format_row(rows[-1]), flush=True)
    fused.set_fused_backend('auto')
    return rows


def format_row(r: dict) -> str:
    return (f"| {r['device']} | {r['threads']} | {r['shape']} ({r['elements']:.0e}) "
            f"| {r['variant']} | {r['ms']:.2f} | {r['time_ratio']:.2f} | {r['peak_mb']:.1f} "
            f"| {r['mem_ratio']:.2f} | {r['melem_s']:.0f} |")


def probe_first_call(backend: str) -> None:
    """Run in a fresh process: time the first calls, then vary the anchor count."""
    from torch._dynamo.utils import counters
    torch.set_num_threads(1)
    fused.set_fused_backend(backend)
    out = {}
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        anchors = 100_000 + 997 * step
        x = torch.randn(anchors, NUM_CLASSES, generator=g, requires_grad=True)
        t = torch.rand(anchors, NUM_CLASSES, generator=g) > 0.99
        start = time.perf_counter()
        sigmoid_focal_loss(x, t, ALPHA, GAMMA, 'sum').backward()
        out[f'call_{step + 1}_s'] = time.perf_counter() - start
    worker = compile_backend._COMPILED.worker
    start = time.perf_counter()
    if worker is not None:
        worker.join()
    out['background_compile_left_s'] = time.perf_counter() - start
    graphs = counters['stats']['unique_graphs']
    step_times = []
    for step in range(20):  # anchor counts change every step, as in detection training
        anchors = 60_000 + 4_999 * step
        x = torch.randn(anchors, NUM_CLASSES, generator=g, requires_grad=True)
        t = torch.rand(anchors, NUM_CLASSES, generator=g) > 0.99
        start = time.perf_counter()
        sigmoid_focal_loss(x, t, ALPHA, GAMMA, 'sum').backward()
        step_times.append((time.perf_counter() - start) / x.numel() * 1e9)
    out['graphs_compiled_before_varying'] = graphs
    out['new_graphs_over_20_anchor_counts'] = counters['stats']['unique_graphs'] - graphs
    out['ns_per_element_median'] = statistics.median(step_times)
    out['ns_per_element_max'] = max(step_times)
    print(json.dumps(out))


def first_call_table() -> list:
    lines = ['| backend | compiler cache | 1st call (s) | 2nd call (s) | 3rd call (s) '
             '| compile still running after 3 calls (s) | new graphs over 20 anchor counts '
             '| ns/element median / max over those 20 |', '|---|---|---|---|---|---|---|---|']
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, OMP_NUM_THREADS='1')
        for backend in ('auto', 'compile'):
            for state in ('cold', 'warm'):
                if state == 'cold':  # empty the cache: every compilation from scratch
                    subprocess.run(['rm', '-rf', cache], check=True)
                    os.makedirs(cache)
                res = subprocess.run([sys.executable, __file__, '--probe', backend], env=env,
                                     capture_output=True, text=True, check=True)
                r = json.loads(res.stdout.strip().splitlines()[-1])
                lines.append(f"| {backend} | {state} | {r['call_1_s']:.2f} | {r['call_2_s']:.2f}"
                             f" | {r['call_3_s']:.2f} | {r['background_compile_left_s']:.1f} "
                             f"| {r['new_graphs_over_20_anchor_counts']} "
                             f"| {r['ns_per_element_median']:.1f} / "
                             f"{r['ns_per_element_max']:.1f} |")
                print(lines[-1], flush=True)
    return lines


def short(logits: int) -> str:
    """1e7, 1.6e5: a logit count as --sizes takes it."""
    mantissa, exponent = f'{logits:.1e}'.split('e')
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def target_check_title(anchors: int) -> str:
    """The section's heading (``--target-check`` replaces the section of this title)."""
    return (f'Cost of the [0, 1] target check (issue 15; {short(anchors * NUM_CLASSES)} logits, '
            'fused compiled kernels)')


def logit_count(text: str) -> int:
    """--sizes: a number of logits (1e5, 160000), a positive multiple of the class count."""
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not (value >= NUM_CLASSES and value == int(value) and int(value) % NUM_CLASSES == 0):
        raise argparse.ArgumentTypeError(
            f'{text!r}: a number of logits must be a positive multiple of {NUM_CLASSES} '
            f'(anchors x {NUM_CLASSES} classes), e.g. 1e4, 1e5, 1.6e5')
    return int(value)
HEADER = ['| device | threads | size | variant | fwd+bwd ms (median) | x base '
          '| peak MB | x base | Melem/s |', '|---|---|---|---|---|---|---|---|---|']


def target_check_table(args) -> list:
    """One table per loss, at the largest --sizes: the fused loss with the check off (base),
    on, and the check alone; "x base" = time / time with the check off."""
    lines = ['"x base": time (peak memory) relative to the same loss with the check off. The '
             'peak of "the check alone" counts the inputs (logits, targets, gradient buffer) '
             'like every row; the check itself allocates nothing of that size.', '']
    for title, variants, targets in target_check_sections():
        print(f'\n{title}')
        rows = []
        for threads in args.threads:
            rows += measure('cpu', threads, args.repeats, variants, targets, args.anchors[-1:])
        lines += [f'*{title}*', ''] + HEADER + [format_row(r) for r in rows] + ['']
    return lines


def write_section(path, title, lines) -> None:
    """Replace (or append) the ``### title`` section of the Markdown file ``path``."""
    text = '\n'.join(lines)
    print('\n' + text)
    if not path:
        return
    with open(path) as f:
        old = f.read()
    heading = f'### {title}'
    start = old.find(heading)
    if start < 0:
        new = old.rstrip('\n') + f'\n\n{heading}\n\n{text}\n'
    else:
        end = old.find('\n### ', start + len(heading))
        new = old[:start] + f'{heading}\n\n{text}\n' + (old[end + 1:] if end >= 0 else '')
    with open(path, 'w') as f:
        f.write(new)


# kineto's GPU query on a machine without an NVIDIA driver (module docstring): harmless when
# CUDA is unavailable, so not repeated at the end of the run
NO_DRIVER = 'gpuGetDeviceCount failed with code 35'


def report_messages(path: str) -> None:
    """Say where the libraries' messages went; print the ERROR lines that are not the known
    harmless one."""
    with open(path) as f:
        lines = [line.rstrip('\n') for line in f if line.strip()]
    print(f'\n(library messages while measuring, not part of the tables: {len(lines)} lines in '
          f'{path})')
    for line in lines:
        if line.startswith('ERROR') and not (NO_DRIVER in line and not torch.cuda.is_available()):
            print(f'profiler/compiler error logged in {path}: {line}', file=sys.stderr)


def default_log(out) -> str:
    if out:
        return os.path.splitext(out)[0] + '.profiler.log'
    return os.path.join(tempfile.gettempdir(), f'benchmark_losses_{os.getpid()}.profiler.log')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                        help='torch thread counts; every table is measured at each')
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed fwd+bwd runs per variant, round-robin (the median is '
                        'reported)')
    parser.add_argument('--first-call', action='store_true',
                        help='also measure first-call stall and recompilation (subprocesses)')
    parser.add_argument('--probe', choices=fused.BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument('--target-check', action='store_true',
                        help='measure only the cost of the [0, 1] target check (at the '
                        'largest --sizes) and write its section into --out, leaving the other '
                        'tables')
    parser.add_argument('--sizes', type=logit_count, nargs='+',
                        default=[a * NUM_CLASSES for a in ANCHORS], metavar='LOGITS',
                        help=f'numbers of logits (anchors x {NUM_CLASSES} classes; 1e5 is '
                        'read as 100000): the focal-loss table has one block per size, QFL and '
                        'VFL are measured at the two largest, the target check at the largest')
    parser.add_argument('--out', default=None, help='write the Markdown tables here too')
    parser.add_argument('--log', default=None,
                        help='file for what torch.profiler (kineto) and the compiler write to '
                        'stderr while measuring (default: <--out without .md>.profiler.log, '
                        'without --out a file in the temporary folder)')
    args = parser.parse_args()
    args.anchors = sorted({n // NUM_CLASSES for n in args.sizes})
    if args.probe:
        return probe_first_call(args.probe)
    log = args.log or default_log(args.out)
    try:
        with stderr_to(log):
            benchmark(args)
    finally:
        report_messages(log)


def benchmark(args) -> None:
    if args.target_check:
        command = ' '.join(['.venv/bin/python', 'tools/benchmark_losses.py'] + sys.argv[1:])
        return write_section(args.out, target_check_title(args.anchors[-1]),
                             [f'Command: `{command}`', ''] + target_check_table(args))

    header = ['| device | threads | size | variant | fwd+bwd ms (median) | x torchvision '
              '| peak MB | x torchvision | Melem/s |', '|---|---|---|---|---|---|---|---|---|']
    print('\n'.join(header))
    rows = []
    for threads in args.threads:
        rows += measure('cpu', threads, args.repeats, anchor_counts=args.anchors)
    if torch.cuda.is_available():
        rows += measure('cuda', 1, args.repeats, anchor_counts=args.anchors)
    lines = [f'torch {torch.__version__}, gamma={GAMMA}, alpha={ALPHA}, median of '
             f'{args.repeats} fwd+bwd runs; CUDA available: {torch.cuda.is_available()}', '']
    lines += header + [format_row(r) for r in rows]
    sections = [
        ('Quality focal loss (beta = 2; "x torchvision" columns are vs mmdet\'s '
         'quality_focal_loss_tensor_target; 1 % of the pairs carry a score)', QFL_VARIANTS),
        ('Varifocal loss (alpha 0.75, gamma 2, IoU-weighted; "x torchvision" columns are vs '
         'mmdet\'s varifocal_loss; same targets as QFL)', VFL_VARIANTS)]
    for title, variants in sections:  # generalized focal losses, at the two largest sizes
        print(f'\n{title}')
        section = []
        for threads in args.threads:
            section += measure('cpu', threads, args.repeats, variants, quality_targets,
                               args.anchors[-2:])
        lines += ['', f'### {title}', ''] + header + [format_row(r) for r in section]
    lines += ['', f'### {target_check_title(args.anchors[-1])}', ''] + target_check_table(args)
    if args.first_call:
        lines += ['', '### First call and varying anchor counts (fresh process, 1 thread, '
                  '~100k x 80 logits)', ''] + first_call_table()
    text = '\n'.join(lines)
    print('\n' + text)
    if args.out:
        cmd = ' '.join(['.venv/bin/python', 'tools/benchmark_losses.py'] + sys.argv[1:])
        with open(args.out, 'w') as f:
            f.write(f'# Focal loss benchmark\n\nCommand: `{cmd}`\n\n{text}\n')


if __name__ == '__main__':
    main()
