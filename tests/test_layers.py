"""The package's layers by dependency (issue 21): with MMDetection and mmcv unimportable,
``import focal_plugin`` registers the engine layer (losses, hook, stress datasets and models)
in MMEngine's root registries and a real Runner trains with the hook; the detection layer says
how to install what it needs; and the loss modules' reduction is mmdet's."""
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch

from focal_plugin.losses._contract import weight_reduce_loss

HOOK_TESTS = osp.join(osp.dirname(osp.abspath(__file__)), 'hooks')

_WITHOUT_MMDET = textwrap.dedent('''
    import sys
    sys.modules['mmdet'] = None  # as if not installed: every import of it fails
    sys.modules['mmcv'] = None
    import tempfile
    import torch
    torch.set_num_threads(1)
    import focal_plugin
    from mmengine.registry import DATASETS, HOOKS, MODELS
    for name in ('StableFocalLoss', 'StableSoftmaxFocalLoss', 'StableQualityFocalLoss',
                 'StableVarifocalLoss', 'UnifiedFocalLoss', 'LeNetBinaryClassifier'):
        assert name in MODELS, name
    assert 'GradientSanitizerHook' in HOOKS and 'BinaryMNIST' in DATASETS
    assert 'ShapesCocoDataset' not in DATASETS  # the detection layer: not half-registered
    try:
        import focal_plugin.detection
    except ImportError as err:
        assert "pip install 'focal_plugin[mmdet]'" in str(err), err
    else:
        raise AssertionError('focal_plugin.detection imported without mmdet')

    pred = torch.randn(20, 3, requires_grad=True)
    labels = torch.randint(0, 4, (20,))
    scores = torch.rand(20)
    dense = torch.where(labels[:, None] == torch.arange(3), scores[:, None], 0.0)
    segmentation = torch.randn(2, 1, 8, 8, requires_grad=True)
    masks = (torch.rand(2, 8, 8) > 0.7).long()
    calls = {  # every engine-layer loss, built from a config dict, called as mmdet does
        'StableFocalLoss': lambda m: m(pred, labels, torch.rand(20), avg_factor=7.0),
        'StableSoftmaxFocalLoss': lambda m: m(pred, labels.clamp(max=2)),
        'StableQualityFocalLoss': lambda m: m(pred, (labels, scores), avg_factor=5.0),
        'StableVarifocalLoss': lambda m: m(pred, dense),
        'UnifiedFocalLoss': lambda m: m(segmentation, masks),
        'StableAsymmetricFocalLoss': lambda m: m(segmentation, masks),
        'StableFocalTverskyLoss': lambda m: m(segmentation, masks),
    }
    for name, call in calls.items():
        value = call(MODELS.build(dict(type=name)))
        value.backward()
        assert torch.isfinite(value), name
    assert torch.isfinite(pred.grad).all() and torch.isfinite(segmentation.grad).all()

    sys.path.insert(0, sys.argv[1])
    from sanitizer_toys import FaultInjectionHook, all_finite, make_runner, model_state
    faults = FaultInjectionHook({2: 'grad_nan'})
    runner = make_runner(tempfile.mkdtemp(), hook=dict(type='GradientSanitizerHook',
                                                       policy='skip'),
                         extra_hooks=(faults,), max_iters=6)
    runner.train()
    hook = [h for h in runner.hooks if type(h).__name__ == 'GradientSanitizerHook'][0]
    assert hook.counters['skipped'] == 1, hook.counters
    assert all_finite(model_state(runner))
    assert sys.modules['mmdet'] is None and sys.modules['mmcv'] is None
    print('ENGINE LAYER OK')
''')


def test_engine_layer_without_mmdet_and_mmcv():
    """The hook in a real Runner (skip, one NaN), every engine-layer loss from a config."""
    result = subprocess.run([sys.executable, '-c', _WITHOUT_MMDET, HOOK_TESTS],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'ENGINE LAYER OK' in result.stdout


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('avg_factor', [None, 0.0, 7.5, 'tensor'])
def test_weight_reduce_loss_is_mmdets(reduction, weighted, avg_factor):
    utils = pytest.importorskip('mmdet.models.losses.utils')
    g = torch.Generator().manual_seed(3)
    loss, weight = torch.rand(12, 5, generator=g), torch.rand(12, 1, generator=g)
    if avg_factor == 'tensor':
        avg_factor = torch.tensor(4.0)
    kwargs = dict(weight=weight if weighted else None, reduction=reduction,
                  avg_factor=avg_factor)
    if avg_factor is not None and reduction == 'sum':
        with pytest.raises(ValueError, match='avg_factor can not be used'):
            utils.weight_reduce_loss(loss, **kwargs)
        with pytest.raises(ValueError, match='avg_factor can not be used'):
            weight_reduce_loss(loss, **kwargs)
        return
    assert torch.equal(weight_reduce_loss(loss, **kwargs),
                       utils.weight_reduce_loss(loss, **kwargs))


def test_hook_only_example_runs_without_mmdet(tmp_path):
    """README's plain-MMEngine example, with mmdet and mmcv unimportable."""
    script = osp.join(osp.dirname(HOOK_TESTS), '..', 'tools', 'hook_only_example.py')
    code = ("import sys, runpy; sys.modules['mmdet'] = None; sys.modules['mmcv'] = None; "
            f"sys.argv = ['x', '--work-dir', {str(tmp_path)!r}]; "
            f"runpy.run_path({script!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'weights finite after training: True' in result.stdout
    assert 'events=1 skipped=1' in result.stdout + result.stderr


def test_a_stress_config_trains_through_train_py_without_mmdet(tmp_path):
    from focal_plugin.datasets.synthetic import write_synthetic_mnist
    from focal_plugin.stress import read_divergence
    root = str(tmp_path / 'mnist')
    write_synthetic_mnist(root, split='test', num_samples=16)
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    config = osp.join(repo, 'configs', 'stress', 'mnist_binary',
                      'lenet_sgd-600e_mnist-t10k-binary_cpu_exact.py')
    argv = [config, '--work-dir', str(tmp_path / 'run'), '--cfg-options',
            f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}', 'train_dataloader.batch_size=8',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=1']
    code = ("import sys, runpy; sys.modules['mmdet'] = None; sys.modules['mmcv'] = None; "
            f"sys.argv = ['train.py'] + {argv!r}; "
            f"runpy.run_path({osp.join(repo, 'tools', 'train.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300, cwd=repo)
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_divergence(str(tmp_path / 'run'))
    assert record['status'] == 'completed' and record['completed_epochs'] == 1
    assert len(record['train_loss']) == 1  # 16 images / batch 8: 2 iterations in the epoch
