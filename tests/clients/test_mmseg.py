"""MMSegmentation calls the losses through its own decode-head code (issue 33).

In process: mmseg's ``FCNHead.loss_by_feat`` (its call: ``loss_decode(seg_logits, seg_label,
weight=seg_weight, ignore_index=255)``, the result logged under ``loss_name``), with and
without its OHEM sampler, for every segmentation loss; against mmseg's own losses where they
compute the same thing. As a user runs it: mmseg's own ``tools/train.py`` on the shipped config
(``configs/mmseg/``) over shapes label maps the test makes, with a NaN image the hook skips.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

mmseg = pytest.importorskip('mmseg', reason='MMSegmentation is a test dependency (setup.sh)')
from mmengine.structures import PixelData  # noqa: E402
from mmseg.registry import MODELS as SEG_MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

import focal_plugin  # noqa: E402,F401  (registers the losses)
from focal_plugin.datasets.shapes_data import make_shapes_dataset  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'configs', 'mmseg',
                      'unet-s5-d16_fcn_shapes-cpu-64x64_unified-focal.py')
TRAIN = os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')
LOSSES = [dict(type='UnifiedFocalLoss'), dict(type='StableAsymmetricFocalLoss'),
          dict(type='StableFocalTverskyLoss'), dict(type='StableSoftmaxFocalLoss', gamma=0.5),
          dict(type='StableFocalLoss', gamma=0.5, alpha=0.25)]


def _head(loss_decode, num_classes=3, **kwargs):
    return SEG_MODELS.build(dict(type='FCNHead', in_channels=4, channels=4, num_convs=1,
                                 concat_input=False, num_classes=num_classes,
                                 loss_decode=loss_decode, **kwargs))


def _batch(seed=0, num_classes=3, size=8):
    """Logits, labels (int64, as mmseg's PackSegInputs makes them; 20 % are 255) and the
    data samples a decode head reads them from."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(2, num_classes, size, size, generator=g) * 3).requires_grad_(True)
    labels = torch.randint(0, num_classes, (2, size, size), generator=g)
    labels[torch.rand(2, size, size, generator=g) < 0.2] = 255
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return logits, labels, samples


@pytest.mark.parametrize('loss_cfg', LOSSES, ids=lambda c: c['type'])
def test_decode_head_logs_each_loss_under_its_name_and_ignores_255(loss_cfg):
    """The failure of the issue: 'object has no attribute loss_name', then TypeError on
    ignore_index. Now the head's dict has the loss under its loss_name, equal to the direct
    call with ignore_index=255, finite gradients, and nothing flows to ignored pixels."""
    head = _head(loss_cfg)
    logits, labels, samples = _batch()
    losses = head.loss_by_feat(logits, samples)
    module = head.loss_decode
    assert module.loss_name in losses and module.loss_name.startswith('loss_')
    direct = module(logits, labels, weight=None, ignore_index=255)
    assert losses[module.loss_name].item() == pytest.approx(direct.item(), rel=1e-6)
    losses[module.loss_name].backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum(1)[labels == 255] == 0).all()


def test_two_losses_in_a_list_are_logged_separately():
    head = _head([dict(type='UnifiedFocalLoss', loss_weight=1.0),
                  dict(type='StableSoftmaxFocalLoss', gamma=0.5, loss_weight=0.4)])
    logits, _, samples = _batch(1)
    losses = head.loss_by_feat(logits, samples)
    assert {'loss_unified_focal', 'loss_softmax_focal'} <= set(losses)


@pytest.mark.parametrize('loss_cfg', [LOSSES[1], LOSSES[3], LOSSES[4]],
                         ids=lambda c: c['type'])
def test_ohem_sampler_ranks_pixels_by_the_per_pixel_loss(loss_cfg):
    """mmseg's OHEMPixelSampler without thresh calls the loss with reduction_override='none'
    and ranks the (N, H, W) result; the kept pixels' weights reach the loss as seg_weight."""
    head = _head(loss_cfg, sampler=dict(type='OHEMPixelSampler', min_kept=20))
    logits, _, samples = _batch(2)
    losses = head.loss_by_feat(logits, samples)
    loss = losses[head.loss_decode.loss_name]
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize('loss_cfg', [LOSSES[0], LOSSES[2]], ids=lambda c: c['type'])
def test_ohem_with_a_region_loss_needs_thresh_and_says_so(loss_cfg):
    logits, _, samples = _batch(3)
    head = _head(loss_cfg, sampler=dict(type='OHEMPixelSampler', min_kept=20))
    with pytest.raises(ValueError, match='OHEMPixelSampler.*thresh'):
        head.loss_by_feat(logits, samples)
    head = _head(loss_cfg, sampler=dict(type='OHEMPixelSampler', thresh=0.7, min_kept=20))
    assert torch.isfinite(head.loss_by_feat(logits, samples)[head.loss_decode.loss_name])


@pytest.mark.parametrize('avg_non_ignore', [True, False])
def test_softmax_focal_at_gamma_0_is_mmseg_cross_entropy(avg_non_ignore):
    """Migration row: mmseg CrossEntropyLoss(avg_non_ignore) == StableSoftmaxFocalLoss(gamma=0,
    avg_non_ignore), through the decode head's own call."""
    logits, _, samples = _batch(4)
    ce = _head(dict(type='CrossEntropyLoss', avg_non_ignore=avg_non_ignore))
    ours = _head(dict(type='StableSoftmaxFocalLoss', gamma=0.0, avg_non_ignore=avg_non_ignore))
    want = ce.loss_by_feat(logits, samples)['loss_ce']
    got = ours.loss_by_feat(logits, samples)['loss_softmax_focal']
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize('num_classes', [1, 3])
@pytest.mark.parametrize('gamma', [0.5, 2.0])
def test_sigmoid_focal_on_label_maps_is_mmseg_focal_loss_math(num_classes, gamma):
    """Migration row: mmseg FocalLoss(use_sigmoid=True, gamma, alpha) == StableFocalLoss(
    gamma, alpha, avg_non_ignore=False) on the same label maps (one channel: label 1 is the
    foreground). mmseg's module fails on CPU for label maps (it takes ``target[:,
    num_classes]`` where its CUDA branch takes ``[:, :num_classes]``), so its own math,
    ``py_sigmoid_focal_loss``, is given the one-hot targets and valid mask its CUDA branch
    builds."""
    from mmseg.models.losses.focal_loss import py_sigmoid_focal_loss
    logits, labels, _ = _batch(5, num_classes=max(num_classes, 2))
    logits = logits[:, :num_classes].detach()
    if num_classes == 1:
        labels = torch.where(labels == 255, labels, labels.clamp(max=1))
    rows = logits.permute(0, 2, 3, 1).reshape(-1, num_classes)
    flat = labels.reshape(-1)
    valid = (flat != 255).view(-1, 1)
    onehot = torch.nn.functional.one_hot(torch.where(flat == 255, 0, flat), num_classes + 1)
    onehot = onehot[:, 1:] if num_classes == 1 else onehot[:, :num_classes]
    want = py_sigmoid_focal_loss(rows, onehot, gamma=gamma, alpha=0.5, valid_mask=valid)
    ours = SEG_MODELS.build(dict(type='StableFocalLoss', gamma=gamma, alpha=0.5,
                                 avg_non_ignore=False))
    got = ours(logits, labels, ignore_index=255)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def _write_config(tmp_path, data_root, max_iters=4):
    """The shipped config, shrunk further for a test, with a NaN image in the pipeline."""
    text = f"""
_base_ = {CONFIG!r}
custom_imports = dict(imports=['focal_plugin', 'nan_image'], allow_failed_imports=False)
model = dict(backbone=dict(base_channels=4), decode_head=dict(in_channels=4, channels=4),
             auxiliary_head=dict(in_channels=8, channels=4))
train_dataloader = dict(batch_size=2, dataset=dict(data_root={data_root!r}, pipeline=[
    dict(type='LoadImageFromFile'), dict(type='NaNImage', file_names=['000002.png']),
    dict(type='LoadAnnotations'), dict(type='RandomCrop', crop_size=(32, 32)),
    dict(type='PackSegInputs')]))
val_dataloader = dict(dataset=dict(data_root={data_root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={max_iters}, val_interval={max_iters})
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end={max_iters},
                        by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={max_iters}))
"""
    path = tmp_path / 'config.py'
    path.write_text(text)
    return str(path)


@pytest.mark.slow
def test_mmseg_train_py_trains_the_shipped_config_and_the_hook_skips_a_nan_image(tmp_path):
    """The README command, with mmseg's own tools/train.py: the UNet trains with the unified
    focal loss (decode) and the softmax focal loss (auxiliary); image 000002 is NaN, so each
    update whose batch holds it is skipped, the run reaches the end and saves finite weights."""
    data = tmp_path / 'shapes'
    make_shapes_dataset(str(data), num_train=4, num_val=1, size=48, seed=0)
    config = _write_config(tmp_path, str(data) + '/')
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(__file__), ROOT, os.environ.get('PYTHONPATH', '')]),
        OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, TRAIN, config, '--work-dir', str(work_dir)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'decode.loss_unified_focal' in log and 'aux.loss_softmax_focal' in log
    report = json.loads((work_dir / 'gradient_sanitizer_report.json').read_text())
    # 4 images, batch 2, 4 iterations: the NaN image is in 2 of them; both skipped
    assert report['counters']['skipped'] == 2, report['counters']
    checkpoint = torch.load(work_dir / 'iter_4.pth', map_location='cpu', weights_only=False)
    state = checkpoint['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
