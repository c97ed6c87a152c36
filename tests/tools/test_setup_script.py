"""tools/setup.sh --help prints its usage and installs nothing (issue 23)."""
import os
import os.path as osp
import subprocess

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_help_prints_usage_and_touches_nothing(tmp_path):
    venv = tmp_path / 'venv'
    result = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', 'setup.sh'), '--help'],
                            capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, VENV=str(venv)))
    assert result.returncode == 0
    assert 'bash tools/setup.sh' in result.stdout and 'constraints.txt' in result.stdout
    assert not venv.exists()
    bad = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', 'setup.sh'), '--fast'],
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, VENV=str(venv)))
    assert bad.returncode == 2 and '--help' in bad.stderr and not venv.exists()
