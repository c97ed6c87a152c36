"""Smoke test through the real stack: mmdet's own RetinaNet config, the plugin loaded by
``custom_imports``, mmcv's compiled ops, one real ``train_step`` on CPU."""
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.structures import InstanceData

RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


def one_image_batch(size=128):
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         pad_shape=(size, size), scale_factor=(1.0, 1.0),
                                         img_path='random.png'))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[20.0, 30.0, 90.0, 100.0]]),
                                       labels=torch.tensor([3]))
    return dict(inputs=[img], data_samples=[sample])


@pytest.mark.parametrize('loss_cls', [None, dict(type='StableFocalLoss', use_sigmoid=True,
                                                 gamma=0.5, alpha=0.25, loss_weight=1.0)])
def test_retinanet_train_step(loss_cls, tmp_path):
    cfg_file = tmp_path / 'retinanet_plugin.py'
    cfg_file.write_text(
        f"_base_ = {RETINANET!r}\n"
        "custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(init_cfg=None)"  # no pretrained weights offline
        + (f", bbox_head=dict(loss_cls={loss_cls!r})" if loss_cls else '') + ")\n")
    cfg = Config.fromfile(str(cfg_file))  # performs the custom import
    assert cfg.model.type == 'RetinaNet' and cfg.model.backbone.init_cfg is None
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(cfg.model)
    model.train()
    if loss_cls is not None:
        assert type(model.bbox_head.loss_cls).__name__ == 'StableFocalLoss'
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))  # lr 0: grads kept
    losses = model.train_step(one_image_batch(), optim)
    assert set(losses) >= {'loss_cls', 'loss_bbox'}
    assert all(torch.isfinite(v) for v in losses.values())
    # the step zeroes grads after updating: check the head got gradients via a manual pass
    model.zero_grad()
    data = model.data_preprocessor(one_image_batch(), True)
    total, _ = model.parse_losses(model(**data, mode='loss'))
    total.backward()
    head_grad = model.bbox_head.retina_cls.weight.grad
    assert head_grad is not None and torch.isfinite(head_grad).all() and head_grad.abs().sum() > 0
