"""Every stress-test config: the published settings, its loss mode, and a short real run.

The runs swap in small generated data (same file formats as MNIST / CIFAR-10), one epoch and
small batches, and otherwise train the config as shipped through MMEngine's Runner.
"""
import glob
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.runner import Runner

import focal_plugin  # noqa: F401
from focal_plugin.datasets.synthetic import write_synthetic_cifar10, write_synthetic_mnist
from focal_plugin.stress import read_divergence

torch.set_num_threads(1)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STRESS_CONFIGS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'stress', '*', '*.py')))
MODES = ('none', 'epsilon', 'exact')
FAMILIES = {  # config name prefix -> (model type, dataset type, batch size)
    'lenet_sgd-100e_mnist-binary': ('LeNetBinaryClassifier', 'BinaryMNIST', 64),
    'lenet_sgd-600e_mnist-t10k-binary_cpu': ('LeNetBinaryClassifier', 'BinaryMNIST', 64),
    'unet_sgd-1000e_mnist-seg': ('UNetBinarySegmenter', 'MNISTSegmentation', 64),
    'unet-c8_sgd-30e_mnist-t10k-seg_cpu': ('UNetBinarySegmenter', 'MNISTSegmentation', 64),
    'unet_sgd-1000e_mnist-t10k-seg_gpu': ('UNetBinarySegmenter', 'MNISTSegmentation', 64),
    'lenet_sgd-1000e_cifar10-av': ('LeNetBinaryClassifier', 'CIFAR10AnimalsVehicles', 128),
    'lenet_sgd-100e_cifar10-av_cpu': ('LeNetBinaryClassifier', 'CIFAR10AnimalsVehicles', 128),
    'vit-b16_sgd-1000e_cifar10-av': ('ViTBinaryClassifier', 'CIFAR10AnimalsVehicles', 128),
    'vit-mini4_sgd-100e_cifar10-av_cpu': ('ViTBinaryClassifier', 'CIFAR10AnimalsVehicles', 128),
}


def split_name(path):
    stem = osp.splitext(osp.basename(path))[0]
    family, mode = stem.rsplit('_', 1)
    return family, mode


def config_id(path):
    return osp.splitext(osp.basename(path))[0]


def test_every_family_has_the_three_loss_modes():
    names = {split_name(p) for p in STRESS_CONFIGS}
    assert names == {(family, mode) for family in FAMILIES for mode in MODES}


@pytest.mark.parametrize('path', STRESS_CONFIGS, ids=config_id)
def test_config_has_the_published_settings(path):
    family, mode = split_name(path)
    model_type, dataset_type, batch_size = FAMILIES[family]
    cfg = Config.fromfile(path)
    assert cfg.model.type == model_type
    loss = cfg.model.loss
    assert (loss.type, loss.stabilizer, loss.gamma, loss.alpha) == \
        ('StableFocalLoss', mode, 0.5, 0.5)
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=1e-3, momentum=0.9)
    assert cfg.train_dataloader.batch_size == batch_size
    assert cfg.train_dataloader.dataset.type == dataset_type
    assert cfg.val_dataloader.dataset.type == dataset_type
    assert cfg.train_cfg.type == 'InterruptibleEpochBasedTrainLoop'
    per_epoch_checkpoint = [] if family.endswith('_gpu') else [  # GPU: ~250 MB each, none
        dict(type='CheckpointHook', interval=1, max_keep_ckpts=1, save_last=False,
             filename_tmpl='last_epoch_{}.pth')]
    assert cfg.custom_hooks == [dict(type='GradientSanitizerHook', policy='stop'),
                                dict(type='DivergenceRecorderHook', stop=True)] + \
        per_epoch_checkpoint
    if family.endswith(('_cpu', '_gpu')):  # the real 10k split, offline
        if family.endswith('_cpu'):
            assert cfg.train_dataloader.num_workers == 0
            assert cfg.train_cfg.max_epochs < 1000
        if dataset_type != 'CIFAR10AnimalsVehicles':  # offline real MNIST test split
            for loader in (cfg.train_dataloader, cfg.val_dataloader):
                assert loader.dataset.data_root == os.environ['FOCAL_MNIST_T10K']
                assert (loader.dataset.split, loader.dataset.download) == ('test', False)
    else:
        expected_epochs = 100 if dataset_type == 'BinaryMNIST' else 1000
        assert cfg.train_cfg.max_epochs == expected_epochs
        assert cfg.train_dataloader.dataset.split == 'train'
        assert cfg.train_dataloader.dataset.download is True
    if model_type == 'UNetBinarySegmenter':
        assert cfg.model.base_channels == (8 if family.endswith('_cpu') else 64)
    if model_type == 'ViTBinaryClassifier':
        assert cfg.model.arch == ('mini4' if family.endswith('_cpu') else 'b16')


def test_model_of_each_config_builds():
    built = {}
    for path in STRESS_CONFIGS:
        family, mode = split_name(path)
        if family.startswith('vit-b16') and mode != 'exact':
            continue  # 86M parameters: building one of the three is enough
        model = MODELS.build(Config.fromfile(path).model)
        assert model.loss_module.stabilizer == mode
        built[family] = sum(p.numel() for p in model.parameters())
    assert built['vit-b16_sgd-1000e_cifar10-av'] > 85_000_000
    assert built['unet_sgd-1000e_mnist-seg'] > 60 * built['unet-c8_sgd-30e_mnist-t10k-seg_cpu']


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    mnist = str(tmp_path_factory.mktemp('mnist'))
    write_synthetic_mnist(mnist, split='train', num_samples=8)
    write_synthetic_mnist(mnist, split='test', num_samples=6)
    cifar = str(tmp_path_factory.mktemp('cifar'))
    write_synthetic_cifar10(cifar, split='train', num_samples=8)
    write_synthetic_cifar10(cifar, split='test', num_samples=6)
    return dict(BinaryMNIST=mnist, MNISTSegmentation=mnist, CIFAR10AnimalsVehicles=cifar)


def shrink_for_test(cfg, data_root, work_dir):
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.update(batch_size=4, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=data_root, download=False)
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = osp.basename(str(work_dir))
    return cfg


@pytest.mark.parametrize('path', STRESS_CONFIGS, ids=config_id)
def test_config_trains_and_validates_on_generated_data(path, data_roots, tmp_path):
    family, mode = split_name(path)
    cfg = Config.fromfile(path)
    if family.startswith('vit-b16'):
        # ViT-B/16 at 224 costs ~4.4 s per step at batch 2 on one CPU thread (and a 0.7 GB
        # checkpoint); its model is built as shipped above, the run uses the same class.
        cfg.model.update(arch='mini4', image_size=32)
    cfg = shrink_for_test(cfg, data_roots[cfg.train_dataloader.dataset.type], tmp_path)
    Runner.from_cfg(cfg).train()
    record = read_divergence(str(tmp_path))
    assert record['status'] == 'completed'
    assert record['iters_per_epoch'] == 2 and record['completed_epochs'] == 1
    assert 0.0 <= record['val_metrics']['binary/accuracy'] <= 1.0
    checkpoint = osp.join(str(tmp_path), 'epoch_1.pth')
    assert osp.isfile(checkpoint)
    os.remove(checkpoint)  # the 64-channel U-Net's is 0.25 GB; pytest keeps old tmp dirs
