"""tools/sweep.py end to end: a 2-cell grid (original vs exact loss on a saturating toy set),
its CSV / figures, resuming, and CLI validation."""
import csv
import json
import os.path as osp

import pytest
import torch
from tool_module import load_tool

from focal_plugin.datasets.synthetic import write_synthetic_mnist
from focal_plugin.stress.cells import CELL_FILE, RECORD_FILE, Snapshot
from focal_plugin.stress.grid import Cell

torch.set_num_threads(1)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CPU_TEMPLATE = osp.join(REPO_ROOT, 'configs', 'stress', 'mnist_binary',
                        'lenet_sgd-600e_mnist-t10k-binary_cpu_{mode}.py')
SEG_TEMPLATE = osp.join(REPO_ROOT, 'configs', 'stress', 'mnist_segmentation',
                        'unet-c8_sgd-30e_mnist-t10k-seg_cpu_{mode}.py')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def sweep():
    # In-process (each cell still trains in its own tools/train.py process): saves the ~9 s
    # that importing torch + mmdet costs a fresh interpreter on this machine.
    return load_tool('sweep')


@pytest.fixture
def run_sweep(sweep, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')

    def run(*args):
        code = sweep.main(list(args))
        return code, capsys.readouterr().out
    return run


@pytest.fixture(scope='module')
def separable_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('separable'))
    write_synthetic_mnist(root, split='test', num_samples=40, separable_at=4)
    return root


def grid_args(data_root, work_root, out):
    return [CPU_TEMPLATE, '--modes', 'none', 'exact', '--gammas', '0.5', '--thresholds', '4',
            '--noises', '0', '--max-epochs', '6', '--jobs', '2', '--work-root', work_root,
            '--out', out, '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}', 'train_dataloader.batch_size=10',
            'optim_wrapper.optimizer.lr=0.5']


def read_rows(out):
    with open(osp.join(out, 'results.csv')) as f:
        return {row['mode']: row for row in csv.DictReader(f)}


def test_two_cell_grid_end_to_end_and_resume(tmp_path, separable_root, run_sweep):
    work_root, out = str(tmp_path / 'runs'), str(tmp_path / 'out')
    code, stdout = run_sweep(*grid_args(separable_root, work_root, out))
    assert code == 0, stdout[-3000:]
    assert 'none/gamma0.5_th4_noise0.0: diverged at epoch' in stdout
    assert 'exact/gamma0.5_th4_noise0.0: completed (6/6 epochs)' in stdout

    rows = read_rows(out)
    assert set(rows) == {'none', 'exact'}
    none, exact = rows['none'], rows['exact']
    assert (none['gamma'], none['threshold'], none['noise'], none['alpha']) == \
        ('0.5', '4', '0.0', '0.5')
    assert none['status'] == 'diverged'
    assert int(none['completed_epochs']) < 6
    assert int(none['nonfinite_epoch']) == int(none['completed_epochs']) + 1
    assert int(none['nonfinite_iter']) >= 1 and none['final_train_acc'] != ''
    assert exact['status'] == 'completed' and exact['completed_epochs'] == '6'
    assert exact['nonfinite_iter'] == '' and float(exact['val_accuracy']) == 1.0
    assert float(exact['positive_fraction']) == pytest.approx(0.5)
    # the most confident logits of the run (against the float32 break points)
    assert float(exact['neg_logit_min']) < 0 < float(exact['pos_logit_max'])

    with open(osp.join(out, 'completed_epochs_heatmap.png'), 'rb') as f:
        assert f.read(8) == PNG_MAGIC
    curves = json.load(open(osp.join(out, 'curves.json')))
    assert {c['mode'] for c in curves} == {'none', 'exact'}
    first_run, = json.load(open(osp.join(out, 'sweep.json')))['invocations']
    assert first_run['cells'] == 2 and first_run['ran'] == 2 and first_run['failed'] == 0
    assert first_run['machine']['cpus'] >= 1 and first_run['wall_s'] > 0

    # Resumable: finished cells are skipped and the CSV is rebuilt from their records.
    code, stdout = run_sweep(*grid_args(separable_root, work_root, out), '--plot', 'curves')
    assert code == 0, stdout[-3000:]
    assert '2 already finished, 0 to run' in stdout
    assert read_rows(out) == rows
    runs = json.load(open(osp.join(out, 'sweep.json')))['invocations']
    assert [run['ran'] for run in runs] == [2, 0] and runs[0] == first_run
    with open(osp.join(out, 'loss_curves.png'), 'rb') as f:
        assert f.read(8) == PNG_MAGIC


def test_dry_run_sets_each_axis_in_both_datasets(tmp_path, run_sweep):
    code, stdout = run_sweep(CPU_TEMPLATE, '--modes', 'epsilon', '--gammas', '0.1', '0.3',
                             '--thresholds', '2', '--noises', '0.75', '--seeds', '5',
                             '--work-root', str(tmp_path), '--dry-run')
    assert code == 0
    commands = [line for line in stdout.splitlines() if 'train.py' in line]
    assert len(commands) == 2
    first = commands[0]
    assert 'lenet_sgd-600e_mnist-t10k-binary_cpu_epsilon.py' in first
    for option in ('model.loss.gamma=0.1', 'train_dataloader.dataset.threshold=2',
                   'val_dataloader.dataset.threshold=2', 'train_dataloader.dataset.noise=0.75',
                   'val_dataloader.dataset.noise=0.75', 'randomness.seed=5',
                   'train_dataloader.dataset.seed=5'):
        assert option in first
    assert 'model.loss.stabilizer' not in first  # the {mode} config file sets it
    assert osp.join(str(tmp_path), 'epsilon', 'gamma0.1_th2_noise0.75_seed5') in first


def test_bad_grids_are_rejected(run_sweep, capsys):
    with pytest.raises(SystemExit) as error:
        run_sweep(CPU_TEMPLATE, '--thresholds', '9', '--dry-run')
    assert error.value.code == 2 and 'threshold must be in 0..8' in capsys.readouterr().err
    with pytest.raises(SystemExit, match="has no 'threshold' argument"):
        run_sweep(SEG_TEMPLATE, '--thresholds', '1', '--dry-run')


def test_dry_run_without_axes_runs_each_mode_config_as_it_is(tmp_path, run_sweep):
    code, stdout = run_sweep(SEG_TEMPLATE, '--modes', 'none', 'exact',
                             '--work-root', str(tmp_path), '--dry-run')
    assert code == 0
    commands = [line for line in stdout.splitlines() if 'train.py' in line]
    assert len(commands) == 2
    assert commands[0].endswith('unet-c8_sgd-30e_mnist-t10k-seg_cpu_none.py --work-dir '
                                + osp.join(str(tmp_path), 'none', 'config_defaults'))
    assert '--cfg-options' not in commands[1]


def test_one_config_for_all_modes_sets_the_stabilizer(tmp_path, run_sweep):
    code, stdout = run_sweep(CPU_TEMPLATE.format(mode='exact'), '--modes', 'none',
                             '--work-root', str(tmp_path), '--dry-run')
    assert code == 0
    assert 'model.loss.stabilizer=none' in stdout


def test_a_cell_cut_off_mid_run_resumes_on_a_fresh_clone_from_its_snapshot(
        tmp_path, separable_root, run_sweep):
    """--snapshot-dir: the committed copy of a cell (newest checkpoint + records) is all a
    fresh machine needs to continue the run, and the legs' wall times add up."""
    snapshots = str(tmp_path / 'snapshots')

    def args(work_root, epochs):
        return [CPU_TEMPLATE, '--modes', 'exact', '--gammas', '0.5', '--thresholds', '4',
                '--noises', '0', '--max-epochs', str(epochs), '--work-root', work_root,
                '--out', str(tmp_path / 'out'), '--snapshot-dir', snapshots, '--plot',
                '--cfg-options', f'train_dataloader.dataset.data_root={separable_root}',
                f'val_dataloader.dataset.data_root={separable_root}',
                'train_dataloader.batch_size=10', 'default_hooks.checkpoint.interval=1']

    # The first leg: trained 2 of 4 epochs when its machine went away. (Made by running 2
    # epochs and marking the leg as cut off: a real cut-off leaves exactly this behind.)
    first = str(tmp_path / 'first_machine')
    code, stdout = run_sweep(*args(first, 2))
    assert code == 0, stdout[-3000:]
    cell = Cell('exact', 0.5, 4, 0.0, None)
    leg = Snapshot(snapshots, cell.name(4))
    done = osp.join(first, cell.name(2))
    assert leg.save_checkpoint(done) and not leg.save_checkpoint(done)  # copied once
    leg.save_records(done)
    meta_path = osp.join(leg.dir, CELL_FILE)
    meta = json.load(open(meta_path))
    meta.update(returncode=None, legs=[dict(meta['legs'][0], returncode=None)])
    json.dump(meta, open(meta_path, 'w'))
    assert leg.checkpoints() == ['last_epoch_2.pth']  # the newest: the per-epoch one
    first_wall = meta['wall_s']

    # A fresh clone: empty work root, the committed snapshot only.
    code, stdout = run_sweep(*args(str(tmp_path / 'second_machine'), 4))
    assert code == 0, stdout[-3000:]
    assert f'1 restored from {snapshots}' in stdout
    assert 'exact/gamma0.5_th4_noise0.0: completed (4/4 epochs)' in stdout
    record = json.load(open(osp.join(leg.dir, RECORD_FILE)))
    assert record['completed_epochs'] == 4 and len(record['train_loss']) == 4
    meta = json.load(open(meta_path))
    assert [leg_['returncode'] for leg_ in meta['legs']] == [None, 0]
    assert '--resume' in meta['legs'][1]['command']
    assert meta['wall_s'] == pytest.approx(first_wall + meta['legs'][1]['wall_s'])
    assert leg.checkpoints() == []  # a finished cell keeps its records only
    row, = csv.DictReader(open(tmp_path / 'out' / 'results.csv'))
    assert row['status'] == 'completed' and float(row['wall_s']) == pytest.approx(meta['wall_s'])

    # The snapshot alone reproduces the finished row: nothing runs on a third machine.
    code, stdout = run_sweep(*args(str(tmp_path / 'third_machine'), 4))
    assert code == 0 and '1 already finished, 0 to run' in stdout
