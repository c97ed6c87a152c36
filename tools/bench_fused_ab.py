"""Forward+backward time of the compiled fused 'exact' focal loss vs torchvision at 1e7 logits,
in the interpreter's focal_plugin: run it once per source tree to compare two versions of the
package on the same machine, minutes apart (what a refactor must not slow down).

    PYTHONPATH=<old tree> .venv/bin/python tools/bench_fused_ab.py
    PYTHONPATH=<new tree> .venv/bin/python tools/bench_fused_ab.py
"""
import argparse
import statistics
import time

import torch
import torchvision.ops as tvo

import focal_plugin.functional as functional
from focal_plugin.cli import HelpFormatter
from focal_plugin.functional import set_fused_backend, sigmoid_focal_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed calls per variant, round-robin (the median is reported)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_fused_backend('compile')
    g = torch.Generator().manual_seed(0)
    x = torch.randn(125000, 80, generator=g, requires_grad=True)
    labels = torch.rand(125000, 80, generator=g) > 0.99  # RetinaNet-like one-hot positives

    def ours():
        x.grad = None
        sigmoid_focal_loss(x, labels, 0.25, 2.0, 'sum').backward()

    def torchvision():
        x.grad = None
        tvo.sigmoid_focal_loss(x, labels.float(), 0.25, 2.0, 'sum').backward()

    variants = dict(ours=ours, torchvision=torchvision)
    for fn in variants.values():  # compile and warm up
        fn(), fn()
    times = {name: [] for name in variants}
    for _ in range(args.repeats):  # round-robin: drift hits both alike
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f'{functional.__file__}: ours exact fused {ms["ours"]:.1f} ms, torchvision '
          f'{ms["torchvision"]:.1f} ms, ratio {ms["ours"] / ms["torchvision"]:.3f} '
          f'({args.threads} thread(s), median of {args.repeats})')


if __name__ == '__main__':
    main()
