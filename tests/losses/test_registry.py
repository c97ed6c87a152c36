"""Every loss registers where mmdet and plain MMEngine configs look for it."""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmengine.registry import MODELS as ROOT_MODELS

import focal_plugin  # noqa: F401

NAMES = ['StableFocalLoss', 'StableSoftmaxFocalLoss', 'StableQualityFocalLoss',
         'StableVarifocalLoss', 'UnifiedFocalLoss', 'StableAsymmetricFocalLoss',
         'StableFocalTverskyLoss']


@pytest.mark.parametrize('name', NAMES)
def test_registered_in_mmdet_and_root(name):
    assert name in MMDET_MODELS.module_dict
    assert name in ROOT_MODELS.module_dict
    assert MMDET_MODELS.build(dict(type=name)) is not None
    assert ROOT_MODELS.build(dict(type=name)) is not None


def test_custom_imports_in_a_config_file_registers_in_a_fresh_process(tmp_path):
    """The user path: a config with custom_imports, parsed by Config.fromfile in a process
    that never imported focal_plugin itself."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(textwrap.dedent("""
        custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)
        loss_cls = dict(type='StableFocalLoss', gamma=0.5, alpha=0.25, loss_weight=1.0)
    """))
    script = textwrap.dedent(f"""
        import torch
        from mmengine.config import Config
        from mmdet.registry import MODELS
        cfg = Config.fromfile({str(cfg)!r})
        loss = MODELS.build(cfg.loss_cls)
        x = torch.tensor([[100.0, -100.0]], requires_grad=True)
        loss(x, torch.tensor([0])).backward()
        assert type(loss).__name__ == 'StableFocalLoss' and torch.isfinite(x.grad).all()
        print('ok')
    """)
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith('ok')


def test_built_from_a_plain_mmengine_config_without_scope():
    cfg = Config(dict(loss=dict(type='UnifiedFocalLoss', gamma=0.5)))
    loss = ROOT_MODELS.build(cfg.loss)
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    out = loss(x, torch.randint(0, 2, (1, 4, 4)))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
