# RetinaNet on the offline "shapes" dataset, sized for a 2-core CPU (a few minutes).
# The data is generated into data_root on first use (ShapesCocoDataset, ~20 s); or run
#   .venv/bin/python tools/make_shapes_dataset.py --out data/shapes
# The variants in this folder only change loss_cls.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)

data_root = 'data/shapes/'
classes = ('circle', 'square', 'triangle', 'star')
image_size = (128, 128)

model = dict(
    # ResNet-18 from scratch: no pretrained weights can be downloaded on the machines this
    # config is for (init_cfg=None), so BN layers train (norm_eval=False, nothing frozen).
    # Half-width ResNet-18 (base_channels=32) keeps a training step near a second on 2 cores.
    backbone=dict(depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64, start_level=1, num_outs=5),
    bbox_head=dict(
        num_classes=len(classes), in_channels=64, feat_channels=64, stacked_convs=2,
        # objects are ~12-77 px: anchors from 16 px (stride 8, scale 2) up
        anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32, 64, 128])),
    test_cfg=dict(nms_pre=500, max_per_img=50))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # iteration-based loop
    dataset=dict(type='ShapesCocoDataset', data_root=data_root, ann_file='train.json',
                 data_prefix=dict(img='train/'),
                 metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(type='ShapesCocoDataset', data_root=data_root, ann_file='val.json',
                 data_prefix=dict(img='val/'),
                 metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'val.json')  # mmdet's CocoMetric, bbox
test_evaluator = val_evaluator

max_iters = 300
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[240],
         gamma=0.1),
]
# From scratch, AdamW converges much faster than the COCO recipe's SGD in a few hundred steps.
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05))
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)

# Audit every update; 'warn' records non-finite gradients (report in work_dir) without
# changing training, so the stock run shows what it would do on its own.
custom_hooks = [dict(type='GradientSanitizerHook', policy='warn')]
