"""A stock mmdet RetinaNet (mmdet's FocalLoss, gamma=0.5, CPU path) with only the hook added.

One corrupt image (pixel values x1e4) saturates the classification logits; mmdet's
``py_sigmoid_focal_loss`` then returns a finite loss and NaN gradients. Without the hook the
weights are NaN after that batch; with ``custom_hooks=[dict(type='GradientSanitizerHook')]``
the batch is skipped, named in the report, and training completes with finite weights.
"""
import json
import os.path as osp
import uuid

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmcv.ops')

from mmengine.runner import Runner  # noqa: E402
from sanitizer_toys import RecordHook, all_finite, model_state  # noqa: E402

from focal_plugin.testing import (  # noqa: E402
    SyntheticBoxes,
    detector_runner_kwargs,
    tiny_retinanet_cfg,
)

# batch size 2, no shuffle: iteration 2 (0-based) holds images 4 and 5; image 5 is corrupt
CORRUPT = 5
MAX_ITERS = 6


def train(work_dir, custom_hooks):
    cfg = tiny_retinanet_cfg()
    record = RecordHook()
    runner = Runner(work_dir=work_dir, experiment_name=f'det_{uuid.uuid4().hex[:12]}',
                    custom_hooks=list(custom_hooks) + [record],
                    default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3,
                                                         by_epoch=False),
                                       logger=dict(type='LoggerHook', interval=1)),
                    **detector_runner_kwargs(cfg, SyntheticBoxes(8, corrupt=(CORRUPT,)),
                                             MAX_ITERS))
    runner.train()
    return runner, record


def test_stock_retinanet_focal_loss_nan_gradients_without_the_hook(tmp_path):
    runner, record = train(str(tmp_path), [])
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    # the loss of the corrupt batch is finite (a loss-only check sees nothing) ...
    assert all(v == v and abs(v) != float('inf') for v in losses[:3])
    # ... but its gradients poison the weights
    assert record.finite_after_iter[:3] == [True, True, False]
    assert not all_finite(model_state(runner))


def test_stock_retinanet_survives_with_only_the_hook_added(tmp_path):
    work_dir = str(tmp_path)
    hook = dict(type='GradientSanitizerHook', policy='skip', localize=True)
    runner, record = train(work_dir, [hook])
    assert runner.iter == MAX_ITERS
    assert all(record.finite_after_iter)
    assert all_finite(model_state(runner))
    with open(osp.join(work_dir, 'gradient_sanitizer_report.json')) as f:
        report = json.load(f)
    assert report['counters']['skipped'] == report['counters']['events'] == 1
    event = report['first_event']
    assert (event['iter'], event['kind']) == (3, 'gradient')
    rank0 = event['ranks'][0]
    assert rank0['loss_terms'] == {}  # finite loss, NaN gradients
    assert f'synthetic/img_{CORRUPT:03d}.png' in [s['img_path'] for s in rank0['batch']]
    names = {t['name'] for t in rank0['nonfinite_tensors']}
    assert 'bbox_head.retina_cls.weight' in names
    assert rank0['grad_norm_per_module']['bbox_head']['norm'] == 'nan'
    # the replay shows the forward pass finite and NaN born between retina_cls and the loss
    localization = rank0['localization']
    assert localization['forward'] == []
    assert localization['backward'][0]['module'] == 'bbox_head.retina_cls'
    for path in (osp.join(work_dir, f'iter_{i}.pth') for i in (3, 6)):
        state = torch.load(path, map_location='cpu', weights_only=False)['state_dict']
        assert all_finite(state)


def test_mmdet_check_invalid_loss_hook_fires_late_and_says_nothing(tmp_path):
    """The baseline: mmdet's CheckInvalidLossHook (here at interval 1, its best case)."""
    cfg = tiny_retinanet_cfg()
    record = RecordHook()
    runner = Runner(work_dir=str(tmp_path), experiment_name=f'det_{uuid.uuid4().hex[:12]}',
                    custom_hooks=[dict(type='CheckInvalidLossHook', interval=1), record],
                    default_hooks=dict(checkpoint=None),
                    **detector_runner_kwargs(cfg, SyntheticBoxes(8, corrupt=(CORRUPT,)),
                                             MAX_ITERS))
    with pytest.raises(AssertionError) as info:
        runner.train()
    assert runner.iter == 3  # it fired in iteration 4 (0-based 3) ...
    assert record.finite_after_iter == [True, True, False]  # ... the weights were NaN since 3
    assert str(info.value) == 'None'  # and the assertion carries no message
