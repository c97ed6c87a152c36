"""``import focal_plugin`` imports neither mmdet nor mmcv, and mmdet still finds everything:
whatever the order in which a process imports focal_plugin and mmdet's modules, the losses and
models are in mmdet's own registries and ``ShapesCocoDataset`` resolves. (mmdet's own
``tools/train.py`` training a shapes config whose only link to the plugin is
``custom_imports = ['focal_plugin']``, validation included:
``tests/configs/test_retinanet_configs.py::test_mmdet_own_train_script_runs_a_plugin_config``.)
Fresh interpreters: the import order is the point."""
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ENV = dict(os.environ, OMP_NUM_THREADS='1')

CHECK = textwrap.dedent('''
    import sys
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmdet.registry import DATASETS, MODELS
    for name in ('StableFocalLoss', 'StableQualityFocalLoss', 'UnifiedFocalLoss',
                 'LeNetBinaryClassifier'):
        assert name in MODELS.module_dict and name in ROOT_MODELS.module_dict, name
    assert 'BinaryMNIST' in DATASETS.module_dict
    assert DATASETS.get('ShapesCocoDataset') is not None  # mmdet imports its datasets here
    loss = MODELS.build(dict(type='StableFocalLoss'))
    print('ok', type(loss).__name__)
''')


def _python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=REPO_ROOT)


def test_import_focal_plugin_imports_no_mmdet_and_no_mmcv():
    out = _python(textwrap.dedent('''
        import sys
        import focal_plugin
        from mmengine.registry import HOOKS, MODELS
        assert 'StableFocalLoss' in MODELS.module_dict
        assert 'GradientSanitizerHook' in HOOKS.module_dict
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mmdet', 'mmcv'))
        print(heavy)
    '''))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == '[]'


_SLOW = pytest.mark.slow  # each a fresh interpreter importing mmdet: 12-25 s on 2 cores


@pytest.mark.parametrize('before, after', [
    # mmdet.datasets first imported after the plugin (its import hook imports the detection
    # layer, which imports mmdet.datasets itself): the one order that could go circular;
    # a find_spec before it (as package checks do) must not use up the hook
    ('import focal_plugin, importlib.util; importlib.util.find_spec("mmdet.registry"); '
     'importlib.util.find_spec("mmdet.datasets")', 'from mmdet.datasets import CocoDataset'),
    pytest.param('import focal_plugin', 'import mmdet.registry', marks=_SLOW),
    pytest.param('import mmdet.registry', 'import focal_plugin', marks=_SLOW),
    pytest.param('from mmdet.datasets import CocoDataset', 'import focal_plugin', marks=_SLOW),
    # mmdet's test and demo scripts: register_all_modules imports datasets, models, ...
    pytest.param('import focal_plugin', 'from mmdet.utils import register_all_modules; '
                                        'register_all_modules()', marks=_SLOW),
], ids=['plugin-datasets', 'plugin-registry', 'registry-plugin', 'datasets-plugin',
        'plugin-register_all'])
def test_mmdet_registries_are_filled_whatever_the_import_order(before, after):
    out = _python(f'{before}\n{after}\n{CHECK}')
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith('ok StableFocalLoss')
