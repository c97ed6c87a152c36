"""tools/benchmark_segmentation_losses.py (issue 36): a smoke run measures every variant at the
given shape, writes the table with its command, and keeps the libraries' messages out of the
terminal; shapes are checked."""
import argparse
import os
import os.path as osp
import subprocess
import sys

import pytest
from tool_module import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'benchmark_segmentation_losses.py')


def test_shapes_are_checked():
    tool = load_tool('benchmark_segmentation_losses')
    assert tool.shape_arg('2,19,128,128') == (2, 19, 128, 128)
    for bad in ('2,1,8,8', '2,19,128', 'a,b,c,d', '0,2,8,8'):
        with pytest.raises(argparse.ArgumentTypeError):
            tool.shape_arg(bad)


def test_smoke_run_writes_every_variant(tmp_path):
    out, log = tmp_path / 'seg.md', tmp_path / 'seg.log'
    result = subprocess.run(
        [sys.executable, TOOL, '--shapes', '2,3,8,8', '--repeats', '1', '--out', str(out),
         '--log', str(log)], cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='1'),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert not [line for line in lines if 'USDT' in line or line.startswith('ERROR')]
    text = out.read_text()
    assert 'Command: `.venv/bin/python tools/benchmark_segmentation_losses.py --shapes' in text
    rows = [line for line in text.splitlines() if line.startswith('| cpu | (2, 3, 8, 8) |')]
    variants = {row.split('|')[3].strip() for row in rows}
    assert {'F.cross_entropy', 'Dice loss (softmax, torch)', 'copy of the logits',
            'StableSoftmaxFocalLoss gamma 2, fused', 'UnifiedFocalLoss, fused',
            'StableFocalTverskyLoss, autograd reference', 'mmseg TverskyLoss'} <= variants
    ce = [row for row in rows if '| F.cross_entropy |' in row][0]
    assert ce.split('|')[5].strip() == '1.00' and ce.split('|')[8].strip() == '1.00'
