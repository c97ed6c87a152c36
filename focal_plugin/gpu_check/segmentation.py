"""The ``segmentation`` section (issue 36): the fused softmax focal and unified focal losses
on (N, C, H, W) logits, forward+backward time and peak memory against ``F.cross_entropy``, a
Dice loss and a copy of the logits, and their gradient against the float64 autograd
formulation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from focal_plugin.functional import fused, softmax_focal_loss, unified_focal_loss

from ._common import log
from .speed import median_and_peak, timer

IGNORE = 255


def dice_loss(x, labels):
    """Softmax Dice (per image and class, ignored pixels masked): the region baseline."""
    valid = (labels != IGNORE).unsqueeze(1)
    p = torch.softmax(x, dim=1) * valid
    y = F.one_hot(torch.where(valid.squeeze(1), labels, 0), x.shape[1]).movedim(-1, 1) * valid
    dims = tuple(range(2, x.ndim))
    return (1 - (2 * (p * y).sum(dims) + 1) / (p.sum(dims) + y.sum(dims) + 1)).mean()


def copy_logits(x, labels):
    x.detach().clone()  # the bandwidth reference: no loss to differentiate


def variants(with_references: bool) -> dict:
    def ours(fn, backend):
        def run(x, labels):
            fused.set_fused_backend(backend)
            return fn(x, labels)
        return run

    focal = lambda x, labels: softmax_focal_loss(x, labels, gamma=2.0,  # noqa: E731
                                                 ignore_index=IGNORE)
    unified = lambda x, labels: unified_focal_loss(x, labels, ignore_index=IGNORE)  # noqa: E731
    out = {'F.cross_entropy': lambda x, labels: F.cross_entropy(x, labels, ignore_index=IGNORE),
           'Dice loss': dice_loss,
           'copy of the logits': copy_logits,
           'softmax focal, fused': ours(focal, 'compile'),
           'unified focal, fused': ours(unified, 'compile')}
    if with_references:
        out.update({'softmax focal, autograd reference': ours(focal, 'off'),
                    'unified focal, autograd reference': ours(unified, 'off')})
    return out


def inputs(shape, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=g) * 3).to(device=device, dtype=dtype)
    labels = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
    labels[:, :2] = IGNORE
    return x.requires_grad_(), labels.to(device)


def gradient_error(shape, device) -> str:
    """max |fused - float64 reference| / max |reference| of the unified loss's gradient."""
    x, labels = inputs(shape, device)
    x.data[:, :, 0] *= 1e3  # saturated rows
    grads = []
    for backend, logits in (('compile', x), ('off', x.detach().double().requires_grad_())):
        fused.set_fused_backend(backend)
        unified_focal_loss(logits, labels, ignore_index=IGNORE).backward()
        grads.append(logits.grad.double())
    err = (grads[0] - grads[1]).abs().max() / grads[1].abs().max()
    return f'{err.item():.1e}'


def segmentation(device: str, quick: bool) -> tuple:
    shapes = [(4, 2, 64, 64), (2, 19, 128, 128)] if device == 'cpu' else \
        [(4, 2, 64, 64), (2, 2, 256, 256), (2, 19, 128, 128), (8, 19, 512, 1024)]
    repeats, warmups = (3, 1) if quick else (10, 2)
    seconds = timer(device)
    rows = []
    for shape in shapes:
        x, labels = inputs(shape, device)
        numel = x.numel()
        fns = variants(with_references=numel <= 2e7)
        times, peaks = {}, {}
        for name, fn in fns.items():
            def call(fn=fn, x=x, labels=labels):
                x.grad = None
                loss = fn(x, labels)
                if loss is not None:
                    loss.backward()
            times[name], peak = median_and_peak(call, device, warmups, repeats, seconds)
            if peak is not None:
                peaks[name] = peak
        error = gradient_error(shape, device) if numel <= 2e7 else 'not run (size)'
        for name, t in times.items():
            rows.append([str(shape), name, f'{t * 1e3:.3f}',
                         f'{t / times["F.cross_entropy"]:.2f}',
                         f'{t / times["copy of the logits"]:.1f}',
                         f'{peaks[name]:.1f}' if peaks else 'CUDA only',
                         f'{peaks[name] / peaks["F.cross_entropy"]:.2f}' if peaks
                         else 'CUDA only',
                         error if name == 'unified focal, fused' else ''])
        log(f'segmentation: {shape} done')
    fused.set_fused_backend('compile')
    header = ['logits (N, C, H, W)', 'variant', 'fwd+bwd ms (median)', 'x CE', 'x copy',
              'peak MB above inputs', 'peak x CE', 'unified grad rel err vs float64']
    notes = [f'gamma 2 (softmax focal), the paper\'s defaults (unified); labels with two '
             f'rows ignored (255); median of {repeats} after {warmups} warm-ups. Issue-36 GPU '
             'target: the fused losses within 3x the copy of the logits at 80M logits.']
    return header, rows, notes
