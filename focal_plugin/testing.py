"""A stock MMDetection RetinaNet, shrunk for CPU, and a tiny synthetic detection dataset: what
the hook's mmdet tests and ``tools/benchmark_hook.py`` train (needs mmdet; not imported by
``import focal_plugin``).

The model comes from mmdet's own ``retinanet/retinanet_r50_fpn_1x_coco.py`` with size overrides
only: ResNet-18 with 8 base channels and no pretrained weights, a 16-channel FPN and head, and
mmdet's own ``FocalLoss`` with ``gamma=0.5``. On CPU mmdet computes it with
``py_sigmoid_focal_loss``, whose ``pt ** gamma`` has an infinite derivative at ``pt == 0``: a
saturated logit gives a finite loss and a NaN gradient (what a loss-only check cannot see).
"""
from __future__ import annotations

import copy

import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.structures import InstanceData
from torch.utils.data import Dataset

IMAGE_SIZE = 64


def tiny_retinanet_cfg(base_channels: int = 8, head_channels: int = 16,
                       stacked_convs: int = 1, gamma: float = 0.5) -> Config:
    """The full mmdet config, with the overrides above (a ``Config``; ``.model`` is the model)."""
    # mmengine resolves the 'mmdet::' prefix through the installed package's .mim configs
    cfg = get_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    model = cfg.model
    model.backbone.update(depth=18, base_channels=base_channels, init_cfg=None)
    model.neck.update(in_channels=[base_channels * 2**i for i in range(4)],
                      out_channels=head_channels)
    model.bbox_head.update(num_classes=2, in_channels=head_channels,
                           feat_channels=head_channels, stacked_convs=stacked_convs)
    assert model.bbox_head.loss_cls.type == 'FocalLoss'  # mmdet's own
    model.bbox_head.loss_cls.gamma = gamma
    return cfg


class SyntheticBoxes(Dataset):
    """Bright rectangles on noise, one box each; ``corrupt`` images are scaled by ``scale``
    (e.g. a 16-bit image read without conversion: values far outside [0, 255])."""

    def __init__(self, size: int = 8, corrupt=(), scale: float = 1e4, seed: int = 0,
                 image_size: int = IMAGE_SIZE):
        generator = torch.Generator().manual_seed(seed)
        self.image_size = image_size
        self.items = []
        unit = image_size / 64
        for index in range(size):
            image = torch.rand(3, image_size, image_size, generator=generator) * 60
            x0, y0 = (torch.randint(4, 28, (2, ), generator=generator) * unit).int().tolist()
            w, h = (torch.randint(16, 32, (2, ), generator=generator) * unit).int().tolist()
            x1, y1 = min(x0 + w, image_size - 1), min(y0 + h, image_size - 1)
            image[:, y0:y1, x0:x1] += 150
            if index in corrupt:
                image = image * scale
            label = index % 2
            self.items.append((image, [x0, y0, x1, y1], label))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image, box, label = self.items[index]
        sample = DetDataSample(metainfo=dict(
            img_path=f'synthetic/img_{index:03d}.png', img_id=index,
            ori_shape=(self.image_size, ) * 2, img_shape=(self.image_size, ) * 2,
            scale_factor=(1.0, 1.0), flip=False, flip_direction=None))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([box], dtype=torch.float32),
                                           labels=torch.tensor([label]))
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                                labels=torch.zeros(0, dtype=torch.long))
        return dict(inputs=image.clone(), data_samples=sample)


def detector_runner_kwargs(cfg: Config, dataset: Dataset, max_iters: int,
                           batch_size: int = 2) -> dict:
    """Runner arguments of a training run of ``cfg.model`` on ``dataset`` (CPU, iter-based)."""
    return dict(
        model=copy.deepcopy(cfg.model),
        train_dataloader=dict(dataset=dataset, batch_size=batch_size, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=copy.deepcopy(cfg.optim_wrapper),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_scope='mmdet',
        randomness=dict(seed=0),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')))
