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
* ``autocast``: the loss under ``torch.autocast`` (float16 with a GradScaler over a 30-step
  loop, bfloat16): finite, and equal to the float32 run within the tolerance of the dtype.
* ``segmentation``: the fused softmax focal and unified focal losses on (N, C, H, W)
  logits up to 8 x 19 x 512 x 1024: time and peak memory against ``F.cross_entropy``, a
  Dice loss and a copy of the logits; the unified gradient against float64 (issue 36).
* ``hook``: the audit of ``GradientSanitizerHook`` inside a training loop (ResNet-50, batch
  64): ms per step with and without it (needs mmengine).
"""

from __future__ import annotations

import os
import sys
import time
from typing import List

import torch

from focal_plugin.functional import fused

from ._common import environment, log, write_table
from .hook_cost import hook_cost
from .parity import parity
from .runtime import autocast_check, compile_check
from .segmentation import segmentation
from .speed import speed

__all__ = ['SECTIONS', 'run']

SECTIONS = ('parity', 'speed', 'compile', 'autocast', 'segmentation', 'hook')

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
                  compile='Compilation', autocast='Autocast',
                  segmentation='Segmentation losses (softmax focal, unified focal)',
                  hook="GradientSanitizerHook's audit in a training loop")
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
        elif section == 'autocast':
            header, rows, notes = autocast_check(device, quick)
        elif section == 'segmentation':
            header, rows, notes = segmentation(device, quick)
        else:
            header, rows, notes = hook_cost(device, quick)
        wall = time.perf_counter() - started
        notes = notes + [f'Device: {device}. Section wall time {wall:.0f} s.']
        paths.append(write_table(out_dir, section, f'{titles[section]} ({device})', header,
                                 rows, notes, env, command))
        fused.set_fused_backend(backend)
    return paths
