"""Where compiling the fused kernels starts to pay on the CPU: forward+backward time of the
'exact' sigmoid focal loss (hard labels) and QFL at growing sizes, with the kernel compiled,
the same kernel uncompiled ('eager') and the autograd formulation ('off'), and the path the
default backend takes at that size (``compile_backend.CPU_COMPILE_MIN_NUMEL``).

    .venv/bin/python tools/compile_crossover.py --out work_dirs/compile_crossover.md

One thread; compilation happens before timing (the stall itself is in
results/benchmark_losses.md, "First call"); variants run round-robin, medians reported.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from focal_plugin.cli import HelpFormatter
from focal_plugin.functional import (
    compile_backend,
    fused,
    quality_focal_loss,
    sigmoid_focal_loss,
)

BACKENDS = ('compile', 'eager', 'off')


def _step(loss: str, backend: str, x, t) -> None:
    fused.set_fused_backend(backend)
    x.grad = None
    if loss == 'focal':
        out = sigmoid_focal_loss(x, t, 0.25, 2.0, 'sum')
    else:
        out = quality_focal_loss(x, t, 2.0, 'sum')
    out.backward()


def measure(loss: str, n: int, repeats: int) -> dict:
    """Median ms per forward+backward of each backend at ``n`` logits (n/10 x 10)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n // 10, 10, generator=g).requires_grad_(True)
    u = torch.rand(n // 10, 10, generator=g)
    t = u > 0.9 if loss == 'focal' else u * (torch.rand(n // 10, 10, generator=g) > 0.9)
    times = {b: [] for b in BACKENDS}
    for b in BACKENDS:  # warm-up (and, for 'compile', the compilation)
        _step(loss, b, x, t)
    for _ in range(repeats):
        for b in BACKENDS:
            start = time.perf_counter()
            _step(loss, b, x, t)
            times[b].append(time.perf_counter() - start)
    return {b: statistics.median(v) * 1e3 for b, v in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--sizes', nargs='+', type=lambda s: int(float(s)),
                        default=[160, 1000, 4000, 10000, 16000, 32000, 64000, 100000],
                        help='numbers of logits (1e4 is read as 10000)')
    parser.add_argument('--repeats', type=int, default=200,
                        help='timed calls per backend and size at 1e4 logits (scaled by '
                             '1e4/size, at least 20)')
    parser.add_argument('--out', help='also write the Markdown table here')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rule = compile_backend.CPU_COMPILE_MIN_NUMEL
    compile_backend.CPU_COMPILE_MIN_NUMEL = 0  # time the compiled kernel at every size
    before = fused.get_fused_backend()
    lines = [f'CPU, 1 thread, torch {torch.__version__}; median ms per forward+backward '
             f"(reduction 'sum'); default path: from {rule} logits compiled, else eager.", '',
             '| loss | logits | compiled | eager | off | compiled / best uncompiled '
             '| default path |', '|---|---|---|---|---|---|---|']
    print('\n'.join(lines), flush=True)
    try:
        for loss in ('focal', 'qfl'):
            for n in args.sizes:
                ms = measure(loss, n, max(20, args.repeats * 10000 // n))
                ratio = ms['compile'] / min(ms['eager'], ms['off'])
                lines.append(f"| {loss} | {n} | {ms['compile']:.3f} | {ms['eager']:.3f} | "
                             f"{ms['off']:.3f} | {ratio:.2f} | "
                             f"{'compiled' if n >= rule else 'eager'} |")
                print(lines[-1], flush=True)
    finally:
        compile_backend.CPU_COMPILE_MIN_NUMEL = rule
        fused.set_fused_backend(before)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
