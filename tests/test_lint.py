"""ruff is part of the test command, so style problems fail CI like any other test."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_clean():
    out = subprocess.run([sys.executable, '-m', 'ruff', 'check', '.'], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
