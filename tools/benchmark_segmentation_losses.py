"""Forward+backward time and peak memory of the segmentation losses (StableSoftmaxFocalLoss and
the unified focal family, fused and autograd reference) side by side with ``F.cross_entropy``,
a Dice loss, MMSegmentation's own losses and a copy of the logits.

    .venv/bin/python tools/benchmark_segmentation_losses.py --repeats 7 \\
        --out results/benchmark_segmentation_losses.md
    .venv/bin/python tools/benchmark_segmentation_losses.py --shapes 4,2,64,64 --repeats 1  # smoke

Logits (N, C, H, W) ~ 3 N(0, 1); labels uniform over the classes with the first two rows of
every image ignored (255), as an mmseg decode head passes them (``ignore_index=255``). One
torch thread. Time: median of ``--repeats`` fwd+bwd runs after 2 warm-ups, the variants
round-robin so that drift hits all alike. Peak memory: the highest total of live CPU
allocations during one fwd+bwd (``torch.profiler`` allocation events, as
``tools/benchmark_losses.py``), logits, labels and the ``.grad`` buffer included; on CUDA
``max_memory_allocated``. Shapes whose estimated peak (the autograd references' included)
does not fit in the available memory are skipped with a message; the autograd references and
mmseg's losses are left out above ``--reference-limit`` logits (they take minutes per call on
one CPU thread there).

Ratios: "x CE" is time (peak memory) over ``F.cross_entropy``'s; "x (CE + Dice)" is time over
the sum of ``F.cross_entropy``'s and the Dice loss's (the issue-36 target of the unified loss).

Only the table goes to the terminal: what the libraries write to stderr while the tool
measures (``torch.profiler``'s kineto lines, the compiler's messages) goes to ``--log``
(default: beside ``--out``, ``<out>.log``; else the temporary folder).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from focal_plugin.cli import HelpFormatter, stderr_to
from focal_plugin.functional import fused
from focal_plugin.gpu_check._common import cpu_allocation_peak

SHAPES = [(4, 2, 64, 64), (2, 2, 256, 256), (2, 19, 128, 128), (8, 19, 512, 1024)]
IGNORE = 255


def dice_loss(x, labels):
    """A softmax Dice loss (V-Net form, per image and class, ignored pixels masked), written
    as a user would: the region-loss baseline."""
    valid = (labels != IGNORE).unsqueeze(1)
    p = torch.softmax(x, dim=1) * valid
    y = F.one_hot(torch.where(valid.squeeze(1), labels, 0), x.shape[1]).movedim(-1, 1) * valid
    dims = tuple(range(2, x.ndim))
    inter = (p * y).sum(dims)
    dice = (2 * inter + 1) / (p.sum(dims) + y.sum(dims) + 1)
    return (1 - dice).mean()


def ours(cls_name: str, backend: str, **kwargs) -> Callable:
    from focal_plugin import losses
    module = getattr(losses, cls_name)(**kwargs)

    def run(x, labels):
        fused.set_fused_backend(backend)
        return module(x, labels, ignore_index=IGNORE)
    return run


def mmseg(cls_name: str, **kwargs) -> Callable:
    from mmseg.models import losses
    module = getattr(losses, cls_name)(**kwargs)

    def run(x, labels):
        return module(x, labels, ignore_index=IGNORE)
    return run


def copy_reference(x, labels):
    x.detach().clone()
    return None


def variants(with_references: bool) -> Dict[str, Callable]:
    out = {
        'F.cross_entropy': lambda x, labels: F.cross_entropy(x, labels, ignore_index=IGNORE),
        'Dice loss (softmax, torch)': dice_loss,
        'copy of the logits': copy_reference,
        'StableSoftmaxFocalLoss gamma 2, fused': ours('StableSoftmaxFocalLoss', 'compile'),
        'UnifiedFocalLoss, fused': ours('UnifiedFocalLoss', 'compile'),
        'StableAsymmetricFocalLoss, fused': ours('StableAsymmetricFocalLoss', 'compile'),
        'StableFocalTverskyLoss, fused': ours('StableFocalTverskyLoss', 'compile'),
    }
    if with_references:
        out.update({
            'StableSoftmaxFocalLoss gamma 2, autograd reference':
                ours('StableSoftmaxFocalLoss', 'off'),
            'UnifiedFocalLoss, autograd reference': ours('UnifiedFocalLoss', 'off'),
            'StableAsymmetricFocalLoss, autograd reference':
                ours('StableAsymmetricFocalLoss', 'off'),
            'StableFocalTverskyLoss, autograd reference': ours('StableFocalTverskyLoss', 'off'),
        })
        try:
            out.update({'mmseg CrossEntropyLoss': mmseg('CrossEntropyLoss'),
                        'mmseg DiceLoss': mmseg('DiceLoss'),
                        'mmseg TverskyLoss': mmseg('TverskyLoss')})
        except ImportError:  # mmseg not installed: the torch baselines stay
            pass
    return out


def fwd_bwd(fn, x, labels) -> None:
    x.grad = None
    loss = fn(x, labels)
    if loss is not None:
        loss.backward()


def seconds(fn, x, labels) -> float:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    fwd_bwd(fn, x, labels)
    sync()
    return time.perf_counter() - start


def peak_bytes(fn, x, labels) -> int:
    """Peak of live allocations during one fwd+bwd, inputs and the gradient buffer counted."""
    base = sum(v.untyped_storage().nbytes() for v in (x, labels))
    x.grad = None
    if x.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        fwd_bwd(fn, x, labels)
        torch.cuda.synchronize()
        return base + torch.cuda.max_memory_allocated() - start
    return base + cpu_allocation_peak(lambda: fwd_bwd(fn, x, labels))


def inputs(shape, device):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * 3).to(device).requires_grad_()
    n, c, h, w = shape
    labels = torch.randint(0, c, (n, h, w), generator=g)
    labels[:, :2] = IGNORE
    return x, labels.to(device)


def available_bytes() -> int:
    with open('/proc/meminfo') as f:
        info = dict(line.split(':', 1) for line in f)
    return int(info['MemAvailable'].split()[0]) * 1024


def measure(shape, device: str, repeats: int, with_references: bool) -> List[dict]:
    x, labels = inputs(shape, device)
    fns = variants(with_references)
    for fn in fns.values():  # warm-ups
        fwd_bwd(fn, x, labels)
        fwd_bwd(fn, x, labels)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(seconds(fn, x, labels))
    med = {name: statistics.median(t) for name, t in times.items()}
    peaks = {name: peak_bytes(fn, x, labels) for name, fn in fns.items()}
    ce, dice = med['F.cross_entropy'], med['Dice loss (softmax, torch)']
    rows = []
    for name in fns:
        rows.append(dict(device=device, shape=shape, variant=name, ms=med[name] * 1e3,
                         x_ce=med[name] / ce, x_ce_dice=med[name] / (ce + dice),
                         peak_mb=peaks[name] / 2**20,
                         mem_x_ce=peaks[name] / peaks['F.cross_entropy']))
        print(format_row(rows[-1]), flush=True)
    fused.set_fused_backend('compile')
    return rows


HEADER = ['| device | logits (N, C, H, W) | variant | fwd+bwd ms (median) | x CE | x (CE + Dice) '
          '| peak MB | x CE |', '|---|---|---|---|---|---|---|---|']


def format_row(r: dict) -> str:
    return (f"| {r['device']} | {tuple(r['shape'])} | {r['variant']} | {r['ms']:.2f} "
            f"| {r['x_ce']:.2f} | {r['x_ce_dice']:.2f} | {r['peak_mb']:.1f} "
            f"| {r['mem_x_ce']:.2f} |")


def shape_arg(text: str) -> tuple:
    try:
        shape = tuple(int(v) for v in text.split(','))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1 or shape[1] < 2:
        raise argparse.ArgumentTypeError(f'{text!r}: a shape is N,C,H,W with C >= 2, e.g. '
                                         f'2,19,128,128')
    return shape


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--shapes', type=shape_arg, nargs='+', default=SHAPES,
                        metavar='N,C,H,W', help='logit shapes')
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed fwd+bwd runs per variant (the median is reported)')
    parser.add_argument('--reference-limit', type=float, default=2e7,
                        help='leave the autograd references and mmseg out above this many '
                        'logits')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='where to measure (default: cuda when available)')
    parser.add_argument('--out', default=None, help='write the Markdown table here too')
    parser.add_argument('--log', default=None,
                        help='file for what the libraries write to stderr while measuring')
    args = parser.parse_args(argv)
    log = args.log or (os.path.splitext(args.out)[0] + '.log' if args.out else os.path.join(
        tempfile.gettempdir(), f'benchmark_segmentation_losses_{os.getpid()}.log'))
    with stderr_to(log):
        benchmark(args, argv)
    print(f'\n(library messages while measuring: {log})')


def benchmark(args, argv) -> None:
    torch.set_num_threads(1)
    lines = HEADER[:]
    print('\n'.join(HEADER), flush=True)
    notes = []
    for shape in args.shapes:
        logits = shape[0] * shape[1] * shape[2] * shape[3]
        with_references = logits <= args.reference_limit
        # the fused unified loss works in float64: ~6 logit-sized float32 buffers; the
        # autograd references ~25
        need = logits * 4 * (25 if with_references else 8)
        if args.device == 'cpu' and need > available_bytes():
            notes.append(f'{shape}: skipped, needs ~{need / 2**30:.1f} GiB, '
                         f'{available_bytes() / 2**30:.1f} GiB available')
            print(notes[-1], flush=True)
            continue
        if not with_references:
            notes.append(f'{shape}: autograd references and mmseg left out (above '
                         f'--reference-limit {args.reference_limit:.0e} logits)')
        lines += [format_row(r) for r in measure(shape, args.device, args.repeats,
                                                 with_references)]
    command = ' '.join(['.venv/bin/python', 'tools/benchmark_segmentation_losses.py']
                       + (sys.argv[1:] if argv is None else list(argv)))
    load = os.getloadavg()
    head = [f'Command: `{command}`', '',
            f'torch {torch.__version__}, 1 thread, median of {args.repeats} fwd+bwd after 2 '
            f'warm-ups; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} '
            f'on {os.cpu_count()} cores.'] + [f'- {n}' for n in notes] + ['']
    text = '\n'.join(head + lines)
    print('\n' + text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(f'# Segmentation loss benchmark (issue 36)\n\n{text}\n')


if __name__ == '__main__':
    main()
