"""mmdet's mask heads call the losses through their own code (issue 33).

``FCNMaskHead.loss_and_target`` calls ``loss_mask(mask_preds (n, C, 28, 28), mask_targets
(n, 28, 28), labels)``. In process: the head built from mmdet's Mask R-CNN config with our
losses as ``loss_mask``, called with real sampling results, against mmdet's own
``CrossEntropyLoss(use_mask=True)`` where they compute the same thing. As a user runs it:
mmdet's own ``tools/train.py`` on the shipped Mask R-CNN config over shapes data the test makes.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

mmdet = pytest.importorskip('mmdet')
from mmdet.registry import MODELS as DET_MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hub import get_config  # noqa: E402

import focal_plugin  # noqa: E402,F401  (registers the losses)
from focal_plugin.datasets.shapes_data import make_shapes_dataset  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'configs', 'mask_rcnn',
                      'mask-rcnn_r18_fpn_shapes-cpu_unified-focal.py')
TRAIN = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')


def _mask_head(loss_mask, class_agnostic=False):
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py').model.roi_head.mask_head
    cfg.update(in_channels=8, conv_out_channels=8, num_classes=4, loss_mask=loss_mask,
               class_agnostic=class_agnostic)
    return DET_MODELS.build(cfg)


def _head_call(head, seed=0, n=5):
    """What FCNMaskHead.loss_and_target passes to loss_mask, made the way the head makes it."""
    g = torch.Generator().manual_seed(seed)
    channels = 1 if head.class_agnostic else head.num_classes
    mask_preds = (torch.randn(n, channels, 28, 28, generator=g) * 4).requires_grad_(True)
    mask_targets = (torch.rand(n, 28, 28, generator=g) > 0.5).float()
    labels = torch.randint(0, head.num_classes, (n,), generator=g)
    if head.class_agnostic:
        return mask_preds, mask_targets, torch.zeros_like(labels)
    return mask_preds, mask_targets, labels


@pytest.mark.parametrize('class_agnostic', [False, True])
def test_sigmoid_focal_at_gamma_0_is_mmdet_mask_cross_entropy(class_agnostic):
    """Migration row: mmdet CrossEntropyLoss(use_mask=True) == StableFocalLoss(use_mask=True,
    gamma=0, alpha=None): the same channel is taken, the same mean over n x 28 x 28."""
    theirs = _mask_head(dict(type='CrossEntropyLoss', use_mask=True), class_agnostic)
    ours = _mask_head(dict(type='StableFocalLoss', use_mask=True, gamma=0.0, alpha=None),
                      class_agnostic)
    pred, target, labels = _head_call(theirs)
    want = theirs.loss_mask(pred, target, labels)
    got = ours.loss_mask(pred, target, labels)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    (g_want,) = torch.autograd.grad(want, pred)
    (g_got,) = torch.autograd.grad(got, pred)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize('loss_mask', [
    dict(type='UnifiedFocalLoss', use_mask=True),
    dict(type='StableAsymmetricFocalLoss', use_mask=True),
    dict(type='StableFocalTverskyLoss', use_mask=True),
    dict(type='StableFocalLoss', use_mask=True, gamma=0.5)], ids=lambda c: c['type'])
def test_fcn_mask_head_loss_and_target_with_real_sampling_results(loss_mask):
    """The head's own loss_and_target (targets cropped from the gt masks by mmdet's
    mask_target) calls our loss; the result is finite, with finite gradients, and equals the
    loss of the labelled channels computed directly."""
    from mmdet.models.task_modules.samplers import SamplingResult
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    head = _mask_head(loss_mask)
    g = torch.Generator().manual_seed(1)
    gt_masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    gt_masks[0, 8:40, 10:30] = 1
    gt_masks[1, 30:60, 20:60] = 1
    gt = InstanceData(bboxes=torch.tensor([[10., 8., 30., 40.], [20., 30., 60., 60.]]),
                      labels=torch.tensor([1, 3]), masks=BitmapMasks(gt_masks.numpy(), 64, 64))
    priors = gt.bboxes + torch.randn(2, 4, generator=g)
    sampling = SamplingResult(pos_inds=torch.arange(2), neg_inds=torch.tensor([], dtype=torch.long),
                              priors=priors, gt_bboxes=gt.bboxes,
                              assign_result=_assign(gt.labels), gt_flags=torch.zeros(2))
    mask_preds = (torch.randn(2, 4, 28, 28, generator=g) * 3).requires_grad_(True)
    out = head.loss_and_target(mask_preds, [sampling], [gt], Config(dict(mask_size=28)))
    loss = out['loss_mask']['loss_mask']
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(mask_preds.grad).all()
    targets = out['mask_targets']
    direct = head.loss_mask(mask_preds.detach(), targets, gt.labels)
    assert loss.item() == pytest.approx(direct.item(), rel=1e-6)


def _assign(labels):
    from mmdet.models.task_modules.assigners import AssignResult
    return AssignResult(num_gts=len(labels), gt_inds=torch.arange(1, len(labels) + 1),
                        max_overlaps=torch.ones(len(labels)), labels=labels)


@pytest.mark.slow
def test_mmdet_train_py_trains_the_shipped_mask_rcnn_config(tmp_path):
    """The README command, with mmdet's own tools/train.py, a few iterations on shapes data
    the test makes: loss_mask (the unified focal loss) is logged finite, a checkpoint saved."""
    data = tmp_path / 'shapes'
    make_shapes_dataset(str(data), num_train=4, num_val=2, size=64, seed=0)
    root = str(data) + '/'
    work_dir = tmp_path / 'work'
    options = [f'train_dataloader.dataset.data_root={root}',
               f'val_dataloader.dataset.data_root={root}',
               f'test_dataloader.dataset.data_root={root}',
               f'val_evaluator.ann_file={root}val.json', f'test_evaluator.ann_file={root}val.json',
               'train_dataloader.batch_size=2', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
               'default_hooks.checkpoint.interval=3', 'default_hooks.logger.interval=1']
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, TRAIN, CONFIG, '--work-dir', str(work_dir),
                             '--cfg-options', *options],
                            capture_output=True, text=True, env=env, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    lines = [line for line in log.splitlines() if 'loss_mask:' in line]
    assert lines and all('nan' not in line.split('loss_mask:')[1][:12] for line in lines)
    assert (work_dir / 'iter_3.pth').exists()
