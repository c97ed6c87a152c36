"""tools/wheelhouse.sh (issue 21): the offline install. The wheelhouse is built for this Python,
then installed with --no-index into a fresh virtual environment that has torch, numpy, opencv
and matplotlib (linked from the test environment: no download) but no mmengine, mmdet or mmcv,
and the hook runs there."""
import os
import os.path as osp
import subprocess
import sys
import sysconfig
import venv

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# what the wheelhouse must bring (and the offline machine lacks), by import/dist-info name
ENGINE_LAYER = ('mmengine', 'mmdet', 'mmcv', 'focal_plugin', 'addict', 'yapf', 'yapf_third_party',
                'termcolor', 'rich', 'markdown_it', 'mdurl', 'pygments', 'yaml', '_yaml',
                'platformdirs', 'pyyaml', 'markdown_it_py', '__editable__')


def _torch_machine(site: str, into: str) -> None:
    """A folder of links to every package of this environment but the engine layer's."""
    os.makedirs(into)
    for entry in os.listdir(site):
        stem = entry.split('-')[0].split('.')[0].lower()
        if stem in ENGINE_LAYER or entry.endswith('.pth') or stem in ('pip', 'setuptools'):
            continue
        os.symlink(osp.join(site, entry), osp.join(into, entry))


@pytest.mark.slow
def test_offline_install_from_the_wheelhouse_runs_the_hook(tmp_path):
    wheels = tmp_path / 'wheels'
    built = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', 'wheelhouse.sh'), str(wheels)],
                           capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PYTHON=sys.executable))
    assert built.returncode == 0, built.stderr[-3000:]
    names = sorted(os.listdir(wheels))
    assert any(n.startswith('mmengine-') for n in names)
    assert any(n.startswith('focal_plugin-') for n in names)
    assert not any(n.startswith(('torch-', 'mmdet-', 'mmcv-', 'numpy-', 'opencv')) for n in names)
    size = sum(osp.getsize(wheels / n) for n in names)
    assert size < 10 * 2**20, size  # a few MB

    env_dir = tmp_path / 'offline-venv'
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / 'bin' / 'python')
    target_site = subprocess.run([python, '-c', 'import sysconfig; '
                                  'print(sysconfig.get_paths()["purelib"])'],
                                 capture_output=True, text=True, check=True).stdout.strip()
    _torch_machine(sysconfig.get_paths()['purelib'], str(tmp_path / 'machine'))
    with open(osp.join(target_site, 'machine.pth'), 'w') as f:
        f.write(str(tmp_path / 'machine') + '\n')
    check = subprocess.run([python, '-c', 'import torch, importlib.util as u; '
                            'assert u.find_spec("mmengine") is None'], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr[-2000:]  # torch there, mmengine not

    install = subprocess.run([python, '-m', 'pip', 'install', '--no-index', '--no-deps',
                              *[str(wheels / n) for n in names]],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    run = subprocess.run([python, osp.join(REPO_ROOT, 'tools', 'hook_only_example.py'),
                          '--work-dir', str(tmp_path / 'run')], capture_output=True, text=True,
                         timeout=300, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'weights finite after training: True' in run.stdout
    where = subprocess.run([python, '-c', 'import focal_plugin, mmengine, importlib.util as u; '
                            'print(focal_plugin.__file__, u.find_spec("mmdet"))'],
                           capture_output=True, text=True, cwd=str(tmp_path), check=True)
    assert str(env_dir) in where.stdout and where.stdout.strip().endswith('None')
