"""tools/train.py: mmdet's CLI semantics, and real training runs as a subprocess."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from tool_module import load_tool

from focal_plugin.datasets.synthetic import write_synthetic_mnist
from focal_plugin.stress import read_divergence

torch.set_num_threads(1)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
CPU_CONFIG = osp.join(REPO_ROOT, 'configs', 'stress', 'mnist_binary',
                      'lenet_sgd-600e_mnist-t10k-binary_cpu_exact.py')


def load_train_module():
    return load_tool('train')


@pytest.fixture(scope='module')
def train_tool():
    return load_train_module()


def test_cli_applies_like_mmdets_script(train_tool, tmp_path):
    tool = train_tool
    cfg = tool.build_config(tool.parse_args([CPU_CONFIG, '--amp', '--resume',
                                             '--cfg-options', 'model.loss.gamma=0.3']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.model.loss.gamma == 0.3
    assert cfg.launcher == 'none'
    assert cfg.work_dir == osp.join('./work_dirs', osp.splitext(osp.basename(CPU_CONFIG))[0])

    cfg = tool.build_config(tool.parse_args([CPU_CONFIG, '--resume', 'some/ckpt.pth',
                                             '--work-dir', str(tmp_path)]))
    assert cfg.resume is True and cfg.load_from == 'some/ckpt.pth'
    assert cfg.work_dir == str(tmp_path) and cfg.optim_wrapper.type == 'OptimWrapper'

    with pytest.raises(RuntimeError, match='auto_scale_lr'):
        tool.build_config(tool.parse_args([CPU_CONFIG, '--auto-scale-lr']))


@pytest.fixture(scope='module')
def mnist_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('mnist'))
    write_synthetic_mnist(root, split='test', num_samples=16)
    return root


def run_train(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=300)


def data_options(root, epochs):
    return [f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}', 'train_dataloader.batch_size=8',
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            'default_hooks.checkpoint.interval=1']


def test_trains_then_resumes_from_the_work_dir(tmp_path, mnist_root):
    work_dir = str(tmp_path / 'run')
    first = run_train(CPU_CONFIG, '--work-dir', work_dir,
                      '--cfg-options', *data_options(mnist_root, 1))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert read_divergence(work_dir)['completed_epochs'] == 1

    second = run_train(CPU_CONFIG, '--work-dir', work_dir, '--resume',
                       '--cfg-options', *data_options(mnist_root, 2))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert 'resumed epoch: 1' in second.stdout + second.stderr
    record = read_divergence(work_dir)
    assert record['status'] == 'completed' and record['completed_epochs'] == 2
    assert len(record['train_loss']) == 2  # the record continued across the resume


def test_runs_in_mmdet_scope(tmp_path, mnist_root, train_tool, monkeypatch):
    # MMDetection configs set default_scope='mmdet': the plugin's classes (model, dataset,
    # metric, hook, loop) must resolve from mmdet's registries too. In-process: main() as the
    # script runs it.
    monkeypatch.chdir(REPO_ROOT)
    runner = train_tool.main([CPU_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
                              'default_scope=mmdet', 'experiment_name=mmdet_scope',
                              *data_options(mnist_root, 1)])
    assert runner.default_scope.scope_name == 'mmdet'
    record = read_divergence(str(tmp_path))
    assert record['status'] == 'completed' and record['val_metrics']['binary/accuracy'] >= 0


def test_resume_under_mmdets_own_train_script_with_weights_only_loading(tmp_path, mnist_root):
    """mmdet's tools/train.py (shipped in the mmdet package) resumes a stress config: the
    config's custom_imports loads focal_plugin, whose allow-list lets torch's weights-only
    loading read the checkpoint (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD unset)."""
    import mmdet
    script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    env['OMP_NUM_THREADS'] = '1'
    work_dir = str(tmp_path / 'run')

    def run(epochs, *extra):
        return subprocess.run([sys.executable, script, CPU_CONFIG, '--work-dir', work_dir,
                               *extra, '--cfg-options', *data_options(mnist_root, epochs)],
                              capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=300)

    first = run(1)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = run(2, '--resume')
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert 'resumed epoch: 1' in second.stdout + second.stderr
    assert read_divergence(work_dir)['completed_epochs'] == 2
