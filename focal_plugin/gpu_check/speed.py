"""The ``speed`` section: forward+backward time and peak memory."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict

import torch

from focal_plugin.functional import (
    fused,
    sigmoid_focal_loss,
)

from ._common import log


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


def median_and_peak(call: Callable[[], None], device: str, warmups: int, repeats: int,
                    seconds: Callable) -> tuple:
    """``(median seconds, peak MiB or None)`` of ``call``: warm-ups, the median of ``repeats``
    timed calls, then on CUDA one more call for the peak of memory it allocates."""
    for _ in range(warmups):
        call()
    median = statistics.median(seconds(call) for _ in range(repeats))
    if device != 'cuda':
        return median, None
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return median, (torch.cuda.max_memory_allocated() - start) / 2**20


def speed_variants() -> Dict[str, Callable]:
    def ours(backend, reduction='sum', float_targets=False):
        def run(x, t_bool, t_float):
            fused.set_fused_backend(backend)
            loss = sigmoid_focal_loss(x, t_float if float_targets else t_bool, 0.25, 2.0,
                                      reduction)
            (loss.sum() if reduction == 'none' else loss).backward()
        return run

    focal, inputs = _focal_module(), {}

    def module(x, t_bool, t_float):  # mmdet's call: (N, C) logits, index labels, weights
        fused.set_fused_backend('compile')
        n = x.numel() // 80
        if n not in inputs:  # made once per size, outside the timed calls that follow
            inputs[n] = (_labels(t_bool, n), torch.ones(n, dtype=x.dtype, device=x.device))
        labels, weight = inputs[n]
        focal(x[:n * 80].view(n, 80), labels, weight, avg_factor=n / 100).backward()

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

    variants = {'fused exact (compiled)': ours('compile'),
                'fused exact, mean': ours('compile', 'mean'),
                "fused exact, 'none' + sum": ours('compile', 'none'),
                'fused exact, float 0/1 targets': ours('compile', float_targets=True),
                'autograd exact': ours('off'),
                'torchvision (original formula)': original, 'copy of the logits': copy}
    if focal is not None:
        variants['StableFocalLoss (labels, weights, avg_factor)'] = module
    return variants


def _focal_module():
    try:  # the module path needs the loss modules' dependencies (mmengine, mmdet today)
        from focal_plugin.losses import StableFocalLoss
    except ImportError:
        return None
    return StableFocalLoss(gamma=2.0, alpha=0.25)


def _labels(t_bool, n):
    """Index labels with about the positive rate of ``t_bool`` (80 = background)."""
    g = torch.Generator().manual_seed(n)
    labels = torch.randint(0, 80, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.8, 80, labels).to(t_bool.device)


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
            times[name], peak = median_and_peak(call, device, warmups, repeats, seconds)
            if peak is not None:
                peaks[name] = peak
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
