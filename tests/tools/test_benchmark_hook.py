"""tools/benchmark_hook.py: a sample too small to mean anything says so, and shows no
zero-width "confidence interval"."""
import os
import os.path as osp
import random
import subprocess
import sys

from tool_module import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'benchmark_hook.py')
TINY = ['--rounds', '2', '--warmup', '0', '--batch-size', '1', '--image-size', '32',
        '--base-channels', '4', '--head-channels', '8', '--stacked-convs', '1']


def test_tiny_run_warns_and_shows_no_interval(tmp_path):
    out = tmp_path / 'overhead.md'
    result = subprocess.run([sys.executable, TOOL, *TINY, '--out', str(out)], cwd=tmp_path,
                            env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for text in (result.stdout, out.read_text()):
        assert '**WARNING: sample too small** - only 2 round(s)' in text
        assert '--rounds 100 or more' in text
        rows = [line for line in text.splitlines()
                if line.startswith(('| hook |', '| detect_anomaly |'))]
        assert len(rows) == 2
        for row in rows:
            cells = [c.strip() for c in row.strip('|').split('|')]
            assert cells[3] == 'n/a' and cells[6] == 'n/a', row  # the two interval columns
            assert ' .. ' not in row


def test_interval_only_where_there_is_one():
    tool = load_tool('benchmark_hook')
    rng = random.Random(0)
    base = [1.0 + 0.01 * rng.random() for _ in range(30)]
    varied = [b * (1.05 + 0.02 * rng.random()) for b in base]
    _, low, high = tool.paired_overhead(varied, base)
    assert high > low
    assert tool.interval_cell(low, high, 30).count(' % .. ') == 1
    assert tool.sample_warning(30, no_width=False) is None
    # every round the same ratio: a zero-width bootstrap interval, however many rounds
    _, low, high = tool.paired_overhead([1.1 * b for b in base], base)
    assert tool.zero_width(low, high)
    assert tool.interval_cell(low, high, 30) == 'n/a'
    assert 'zero width' in tool.sample_warning(30, no_width=True)
    # too few rounds: no interval even where the bootstrap happens to spread
    assert tool.interval_cell(-0.1, 0.1, tool.MIN_ROUNDS - 1) == 'n/a'
    assert 'round(s)' in tool.sample_warning(tool.MIN_ROUNDS - 1, no_width=False)
