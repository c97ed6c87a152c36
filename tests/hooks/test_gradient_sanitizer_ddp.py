"""2 processes, gloo, CPU, MMEngine Runner with launcher='pytorch', started by torchrun."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

import focal_plugin

SCRIPT = osp.join(osp.dirname(osp.abspath(__file__)), 'ddp_sanitizer_run.py')
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(focal_plugin.__file__)))

pytestmark = pytest.mark.slow


def torchrun(work_dir, scenario, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                        os.environ.get('PYTHONPATH')])))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nnodes=1',
           '--nproc_per_node=2', SCRIPT, '--work-dir', work_dir, '--scenario', scenario]
    # a timeout here would mean a hang: exactly what the agreed verdict must prevent
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    results = []
    for rank in range(2):
        path = osp.join(work_dir, f'rank{rank}.json')
        assert osp.isfile(path), f'rank {rank} wrote no result\n{proc.stdout}\n{proc.stderr}'
        with open(path) as f:
            results.append(json.load(f))
    return proc, results


def final_states(work_dir):
    return [torch.load(osp.join(work_dir, f'final_rank{r}.pt'), weights_only=False)
            for r in range(2)]


def read_report(work_dir):
    with open(osp.join(work_dir, 'gradient_sanitizer_report.json')) as f:
        return json.load(f)


def test_ranks_agree_to_skip_what_only_rank1_saw(work_dir):
    proc, (r0, r1) = torchrun(work_dir, 'skip_rank1_loss')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert r0['model_type'] == 'MMDistributedDataParallel' and r0['world_size'] == 2
    assert r0['injected'] == [] and [i for i, _ in r1['injected']] == [2, 5]
    assert r0['counters'] == r1['counters']
    assert r0['counters']['skipped'] == 2 and r0['iter'] == r1['iter'] == 8
    a, b = final_states(work_dir)
    assert all(torch.equal(a[k], b[k]) for k in a if 'running' not in k)  # replicas in sync
    report = read_report(work_dir)  # written by rank 0, with every rank's details
    assert [e['iter'] for e in report['events']] == [3, 6]
    for event in report['events']:
        assert event['ranks_with_nonfinite'] == [1]
        assert [r['rank'] for r in event['ranks']] == [0, 1]
        assert event['ranks'][1]['loss_terms'] == {'loss_detached': 'nan'}
        assert event['ranks'][0]['loss_terms'] == {}


def test_all_ranks_raise_at_the_same_iteration(work_dir):
    proc, (r0, r1) = torchrun(work_dir, 'raise_rank1_grad')
    assert proc.returncode != 0
    assert r0['status'] == r1['status'] == 'raised'
    assert r0['iter'] == r1['iter'] == 4
    assert 'at iter 5' in r0['message'] and 'neck.0.weight' in r0['message']
    assert read_report(work_dir)['status'] == 'raised'


def test_all_ranks_stop_and_rank0_saves_the_last_good_state(work_dir):
    proc, (r0, r1) = torchrun(work_dir, 'stop_rank1_loss')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert r0['status'] == r1['status'] == 'finished'
    assert r0['iter'] == r1['iter'] == 4  # both stopped right after iteration 4
    last_good = osp.join(work_dir, 'last_good_iter_4.pth')
    state = torch.load(last_good, map_location='cpu', weights_only=False)['state_dict']
    assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
    assert read_report(work_dir)['status'] == 'stopped'
