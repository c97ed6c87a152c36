"""Shared fixtures of the hook tests. Helpers live in ``sanitizer_toys.py`` (this directory is
on ``sys.path`` under pytest's default import mode, so tests import it directly)."""
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # 2 shared CPU cores: never let torch spread a tiny model over them.
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    torch.set_num_threads(1)
    yield


@pytest.fixture
def work_dir(tmp_path):
    return str(tmp_path / 'work_dir')
