# Mask R-CNN on the offline "shapes" dataset (masks from the shapes' outlines) with the
# Unified Focal Loss as the mask loss, sized for a 2-core CPU. mmdet's FCNMaskHead calls
# loss_mask(mask_preds (n, C, 28, 28), mask_targets (n, 28, 28), labels); use_mask=True takes
# the labelled class's channel, as mmdet's CrossEntropyLoss(use_mask=True) does.
#   python tools/train.py configs/mask_rcnn/mask-rcnn_r18_fpn_shapes-cpu_unified-focal.py \
#       --work-dir work_dirs/mask_rcnn_unified_focal
# The data is generated into data_root on first use (ShapesCocoDataset).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)

data_root = 'data/shapes/'
classes = ('circle', 'square', 'triangle', 'star')
image_size = (128, 128)

model = dict(
    # half-width ResNet-18 from scratch (nothing can be downloaded on the machines this is for)
    backbone=dict(depth=18, base_channels=32, frozen_stages=-1, norm_eval=False,
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(
            in_channels=64, conv_out_channels=64, num_classes=len(classes),
            loss_mask=dict(type='UnifiedFocalLoss', use_mask=True, tversky_weight=0.5,
                           delta=0.6, gamma=0.5, loss_weight=1.0))),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # iteration-based loop
    dataset=dict(type='ShapesCocoDataset', data_root=data_root, ann_file='train.json',
                 data_prefix=dict(img='train/'),
                 metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(type='ShapesCocoDataset', data_root=data_root, ann_file='val.json',
                 data_prefix=dict(img='val/'),
                 metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'val.json', metric=['bbox', 'segm'])
test_evaluator = val_evaluator

max_iters = 300
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[240],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05))
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=100))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)

# Audit every update: a non-finite one is skipped (and reported in the work_dir)
custom_hooks = [dict(type='GradientSanitizerHook', policy='skip')]
