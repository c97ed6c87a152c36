"""A sweep stopped by a signal (issue 23): SIGTERM / SIGINT to the sweep's own PID end its
trainer too (no process left), each cell keeps its last finished epoch, the sweep says how to
resume, and the same command continues with at most the epoch in progress lost. A second sweep
on the same cell is refused while the first trains it."""
import glob
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest

from focal_plugin.datasets.synthetic import write_synthetic_mnist

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
EPOCHS = 100000  # never reached: the test stops the sweep after real progress
TEMPLATE = osp.join(REPO_ROOT, 'configs', 'stress', 'mnist_binary',
                    'lenet_sgd-600e_mnist-t10k-binary_cpu_{mode}.py')


def sweep_command(data_root, work_root, epochs):
    return [sys.executable, osp.join(REPO_ROOT, 'tools', 'sweep.py'), TEMPLATE, '--modes',
            'exact', '--gammas', '0.5', '--thresholds', '4', '--noises', '0', '--max-epochs',
            str(epochs), '--jobs', '1', '--work-root', work_root, '--out', work_root + '_out',
            '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}', 'train_dataloader.batch_size=10']


def record(work_root):
    paths = glob.glob(osp.join(work_root, '*', '*', 'divergence.json'))
    try:
        return json.load(open(paths[0])) if paths else None
    except ValueError:  # being rewritten
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(work_root, epochs, process):
    """Wait for real progress (a record with ``epochs`` finished epochs), not for a time."""
    deadline = time.time() + 300
    while time.time() < deadline:
        rec = record(work_root)
        if rec and rec.get('completed_epochs', 0) >= epochs and rec['status'] == 'running':
            return rec
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    pytest.fail('the cell made no progress: ' + process.communicate()[0][-3000:])


def stop(process, signum):
    process.send_signal(signum)
    output = process.communicate(timeout=240)[0]
    assert process.returncode == 128 + signum, output[-3000:]
    assert 'resume with the same command' in output


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_sweep_stops_its_trainer_and_resume_loses_no_finished_epoch(
        tmp_path, signum):
    data_root = str(tmp_path / 'data')
    write_synthetic_mnist(data_root, split='test', num_samples=40)
    work_root = str(tmp_path / 'runs')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    command = sweep_command(data_root, work_root, EPOCHS)

    def start():
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    sweep = start()
    wait_for(work_root, 2, sweep)
    (lock,) = glob.glob(osp.join(work_root, '*', '*', 'train.lock'))
    work_dir = osp.dirname(lock)
    trainer = int(open(lock).read())
    assert alive(trainer)
    if signum == signal.SIGTERM:  # a second sweep on the same cell is refused, naming it
        second = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert f'PID {trainer}' in second.stdout + second.stderr

    stop(sweep, signum)
    assert not alive(trainer)  # no orphan
    stopped = record(work_root)
    assert stopped['status'] == 'interrupted'
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        saved = f.read().strip()
    # the checkpoint a resume starts from holds every finished epoch
    assert osp.basename(saved) == f"last_epoch_{stopped['completed_epochs']}.pth"

    resumed = start()  # the same command continues the cell from there
    wait_for(work_root, stopped['completed_epochs'] + 1, resumed)
    stop(resumed, signum)
    with open(osp.join(work_dir, 'sweep_stdout.log')) as f:
        assert f"resumed epoch: {stopped['completed_epochs']}" in f.read()
    assert record(work_root)['completed_epochs'] > stopped['completed_epochs']
