"""tools/dist_train.sh: argument handling (the launch itself needs CUDA devices)."""
import os
import os.path as osp
import subprocess

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')


def run_script(*args, **env):
    return subprocess.run(['bash', SCRIPT, *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=60)


def test_launches_train_py_with_torchrun_and_passes_options_through(tmp_path):
    # A stand-in interpreter that prints its arguments, one per line, instead of launching.
    print_args = tmp_path / 'print_args'
    print_args.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    print_args.chmod(0o755)
    result = run_script('configs/x.py', '4', '--work-dir', 'w d', '--amp',
                        PYTHON=str(print_args), NNODES='2', NODE_RANK='1', PORT='29600',
                        MASTER_ADDR='10.0.0.1')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.1',
        '--nproc_per_node=4', '--master_port=29600', osp.join(osp.dirname(SCRIPT), 'train.py'),
        'configs/x.py', '--launcher', 'pytorch', '--work-dir', 'w d', '--amp']


def test_defaults_to_one_local_node():
    result = run_script('c.py', '2', PYTHON='echo')
    assert '--nnodes=1 --node_rank=0 --master_addr=127.0.0.1 --nproc_per_node=2 ' \
        '--master_port=29500' in result.stdout


def test_usage_without_config_and_gpu_count():
    result = run_script('configs/x.py')
    assert result.returncode == 2 and 'usage' in result.stderr
