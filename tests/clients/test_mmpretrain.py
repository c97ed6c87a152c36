"""MMPretrain calls the losses through its own head code (issue 33).

``ClsHead._get_loss`` calls ``loss_module(cls_score, target, avg_factor=N)``: target is class
indices, or the (N, C) ``gt_score`` that Mixup / CutMix / label smoothing make. In process: the
head with our losses, its own Mixup, against mmpretrain's own losses where they compute the
same thing. As a user runs it: mmpretrain's own ``tools/train.py`` on the shipped config
(``configs/mmpretrain/``), adapted to images the test makes, with a NaN image the hook skips.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

mmpretrain = pytest.importorskip('mmpretrain', reason='MMPretrain is a test dependency')
from mmpretrain.models.utils.batch_augments import Mixup  # noqa: E402
from mmpretrain.registry import MODELS as CLS_MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402

import focal_plugin  # noqa: E402,F401  (registers the losses)

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'configs', 'mmpretrain',
                      'resnet18_8xb16_cifar10_softmax-focal-mixup.py')
TRAIN = os.path.join(os.path.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')


def _samples(labels):
    return [DataSample().set_gt_label(int(label)) for label in labels]


def _mixed(seed=0, n=8, num_classes=5):
    """Scores, and data samples whose gt_score mmpretrain's own Mixup made (as its data
    preprocessor does: one-hot scores mixed, then set on the samples)."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # (Mixup draws lambda with numpy)
    scores = (torch.randn(n, num_classes) * 3).requires_grad_(True)
    labels = torch.randint(0, num_classes, (n,))
    samples = _samples(labels)
    onehot = torch.nn.functional.one_hot(labels, num_classes)
    _, mixed = Mixup(alpha=0.4)(torch.zeros(n, 3, 2, 2), onehot)
    for sample, score in zip(samples, mixed):
        sample.set_gt_score(score)
    return scores, samples


@pytest.mark.parametrize('loss', [dict(type='StableSoftmaxFocalLoss', gamma=0.5),
                                  dict(type='StableFocalLoss', gamma=0.5, alpha=0.25)],
                         ids=lambda c: c['type'])
def test_cls_head_under_mixup_calls_the_loss_with_probabilities(loss):
    """The failure of the issue: StableSoftmaxFocalLoss refused Mixup's gt_score (float
    targets). Now the head's call gives the loss of the probability targets, finite grads."""
    head = CLS_MODELS.build(dict(type='ClsHead', loss=loss, cal_acc=False))
    scores, samples = _mixed()
    target = torch.stack([s.gt_score for s in samples])
    assert not torch.all((target == 0) | (target == 1))  # really mixed
    losses = head._get_loss(scores, samples)
    direct = head.loss_module(scores, target, avg_factor=scores.shape[0])
    assert losses['loss'].item() == pytest.approx(direct.item(), rel=1e-6)
    losses['loss'].backward()
    assert torch.isfinite(scores.grad).all()


def test_softmax_focal_at_gamma_0_is_mmpretrain_soft_cross_entropy():
    """Migration row: mmpretrain CrossEntropyLoss(use_soft=True) == StableSoftmaxFocalLoss(
    gamma=0) on Mixup's soft targets, through the head's own call."""
    scores, samples = _mixed(1)
    theirs = CLS_MODELS.build(dict(type='ClsHead', cal_acc=False, loss=dict(
        type='CrossEntropyLoss', use_soft=True)))
    ours = CLS_MODELS.build(dict(type='ClsHead', cal_acc=False, loss=dict(
        type='StableSoftmaxFocalLoss', gamma=0.0)))
    want = theirs._get_loss(scores, samples)['loss']
    got = ours._get_loss(scores, samples)['loss']
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize('gamma', [2.0, 0.5])
@pytest.mark.parametrize('soft', [False, True], ids=['labels', 'mixup'])
def test_sigmoid_focal_is_mmpretrain_focal_loss_and_finite_where_it_is_not(gamma, soft):
    """Migration row: mmpretrain FocalLoss(gamma, alpha) == StableFocalLoss(gamma, alpha) on
    labels and on soft targets; at logits +-20 and gamma 0.5 mmpretrain's gradient is NaN,
    ours is finite."""
    scores, samples = _mixed(2)
    if not soft:
        samples = _samples(torch.randint(0, 5, (8,)))
    theirs = CLS_MODELS.build(dict(type='ClsHead', cal_acc=False, loss=dict(
        type='FocalLoss', gamma=gamma, alpha=0.25)))
    ours = CLS_MODELS.build(dict(type='ClsHead', cal_acc=False, loss=dict(
        type='StableFocalLoss', gamma=gamma, alpha=0.25)))
    want = theirs._get_loss(scores, samples)['loss']
    got = ours._get_loss(scores, samples)['loss']
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    saturated = (scores.detach().sign() * 20).requires_grad_(True)
    ours._get_loss(saturated, samples)['loss'].backward()
    assert torch.isfinite(saturated.grad).all()


def _images(root, classes=10, per_class=2, size=32):
    """CustomDataset's layout: one folder per class; 000 of class 0 is the NaN one."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = os.path.join(root, f'class{c}')
        os.makedirs(folder)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[..., c % 3] = 40 * (c + 1) % 256  # something to learn
            Image.fromarray(pixels).save(os.path.join(folder, f'{c}{i:02d}.png'))


@pytest.mark.slow
def test_mmpretrain_train_py_trains_the_shipped_config_and_the_hook_skips_a_nan_image(
        tmp_path):
    """The README command, with mmpretrain's own tools/train.py (CIFAR-10 swapped for images
    the test makes, ResNet-18 kept): Mixup's soft targets reach the stable softmax focal loss;
    one NaN image makes its updates non-finite, the hook skips them, the run ends with finite
    weights and a checkpoint."""
    data = tmp_path / 'images'
    _images(str(data))
    pipeline = [dict(type='LoadImageFromFile'), dict(type='NaNImage', file_names=['000.png']),
                dict(type='PackInputs')]
    config = tmp_path / 'config.py'
    config.write_text(f"""
_base_ = {CONFIG!r}
custom_imports = dict(imports=['focal_plugin', 'nan_image'], allow_failed_imports=False)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(_delete_=True, type='CustomDataset',
                                     data_root={str(data)!r}, pipeline={pipeline!r}))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                      dataset=dict(_delete_=True, type='CustomDataset',
                                   data_root={str(data)!r}, pipeline={pipeline[::2]!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = dict(milestones=[1])
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
randomness = dict(seed=0)
""")
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(__file__), ROOT, os.environ.get('PYTHONPATH', '')]),
        OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, TRAIN, str(config), '--work-dir', str(work_dir),
                             '--no-persistent-workers'],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((work_dir / 'gradient_sanitizer_report.json').read_text())
    # 20 images, batch 4, 2 epochs: the NaN image is in one batch per epoch
    assert report['counters']['skipped'] == 2, report['counters']
    state = torch.load(work_dir / 'epoch_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
