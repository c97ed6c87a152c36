"""The ``parity`` section: fused vs autograd vs the original formula, against float64."""
from __future__ import annotations

from typing import Callable, Dict

import torch

from focal_plugin.functional import (
    fused,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)

from ._common import log

HARD_POINTS = [1e4, 100.0, 20.0, 17.5, 16.7, 16.6, 10.0, 3.0, 1.0, 0.1, 0.0]


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
