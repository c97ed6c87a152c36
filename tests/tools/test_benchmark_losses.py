"""tools/benchmark_losses.py: the output is the tables and nothing else (the profiler's and the
compiler's messages go to a log file), and --sizes picks the logit counts."""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
from tool_module import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'benchmark_losses.py')

# every kind of line the tool itself prints
OWN_LINES = [
    r'\|.*\|',  # table header, separator and rows
    r'(### |\*)?(Quality focal loss \(|Varifocal loss \(|Cost of the \[0, 1\] target check \('
    r'|sigmoid focal, |QFL\*?$|VFL\*?$)',  # section titles
    r'torch \S+, gamma=\S+, alpha=\S+, median of \d+ fwd\+bwd runs; CUDA available: ',
    r'"x base": time \(peak memory\) relative to ',
    r'\(library messages while measuring, not part of the tables: \d+ lines in ',
]


def test_sizes_are_numbers_of_logits():
    tool = load_tool('benchmark_losses')
    assert tool.logit_count('1e5') == 100_000
    assert tool.logit_count('1.6e5') == 160_000
    for bad in ('100', '0', '-80', '1e4.5', 'x', '80.5'):
        with pytest.raises(argparse.ArgumentTypeError):
            tool.logit_count(bad)
    assert tool.target_check_title(125_000).startswith(
        'Cost of the [0, 1] target check (issue 15; 1e7 logits,')  # the committed heading
    assert tool.short(160_000) == '1.6e5'


def test_tiny_run_prints_only_its_tables(tmp_path):
    log = tmp_path / 'profiler.log'
    out = tmp_path / 'bench.md'
    result = subprocess.run(
        [sys.executable, TOOL, '--sizes', '1e4', '--repeats', '1', '--threads', '1',
         '--out', str(out), '--log', str(log)],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='1'), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=300)  # stderr too: what a terminal shows
    assert result.returncode == 0, result.stdout[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith('ERROR')]
    foreign = [line for line in lines if not any(re.match(p, line) for p in OWN_LINES)]
    assert not foreign, foreign[:10]
    rows = [line for line in lines if line.startswith('| cpu | 1 | 125 x 80 (1e+04) |')]
    assert len(rows) >= 2 * (9 + 3 + 3 + 4 * 3)  # printed as measured, then in the summary
    assert not [line for line in lines if '12500 x 80' in line or '125000 x 80' in line]
    assert '### Cost of the [0, 1] target check (issue 15; 1e4 logits,' in out.read_text()
    # the messages are kept, and the last line says where and how many
    with open(log) as f:
        logged = [line for line in f if line.strip()]
    assert lines[-1] == (f'(library messages while measuring, not part of the tables: '
                         f'{len(logged)} lines in {log})')
