"""tools/gpu_stress.sh (issue 25) on the CPU at a tiny size: both runs side by side through the
stress engine, stopped by the wall-time budget at the end of an epoch, and every output written
(CSV, curves, records, logit-extremes figure, machine line)."""
import csv
import os
import os.path as osp
import subprocess

import pytest

from focal_plugin.datasets.synthetic import write_synthetic_mnist

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_gpu_stress_runs_on_cpu_and_stops_at_the_budget(tmp_path):
    data = str(tmp_path / 'mnist')
    write_synthetic_mnist(data, split='test', num_samples=64)
    out = str(tmp_path / 'out')
    result = subprocess.run(
        ['bash', osp.join(REPO_ROOT, 'tools', 'gpu_stress.sh'), out, '--data', data,
         '--budget-min', '0.05', '--', '--max-epochs', '100000', '--cfg-options',
         'model.base_channels=2', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False', 'train_dataloader.batch_size=16'],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'CUDA is not available' in result.stdout
    assert 'wall-time budget of 3 s reached' in result.stdout
    rows = {r['mode']: r for r in csv.DictReader(open(osp.join(out, 'results.csv')))}
    assert set(rows) == {'none', 'exact'}
    assert all(r['status'] == 'interrupted' and int(r['completed_epochs']) >= 1
               for r in rows.values())
    for name in ('loss_curves.png', 'logit_extremes.png', 'logit_extremes.csv',
                 'machine.txt', 'records/none/divergence.json',
                 'records/exact/divergence.json'):
        assert osp.getsize(osp.join(out, name)) > 0, name
    assert not any(f.endswith('.pth') for _, _, files in os.walk(out) for f in files)
