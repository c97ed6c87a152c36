# MMSegmentation's UNet (its DRIVE config, inherited) with the Unified Focal Loss on the decode
# head and the stable softmax focal loss on the auxiliary head, on the offline "shapes" label
# maps (background + 4 classes), sized for a 2-core CPU (3-6 s per iteration measured there).
#   python tools/make_shapes_dataset.py --out data/shapes       # images + label maps, ~20 s
#   MMSEG=$(python -c "import mmseg, os; print(os.path.dirname(mmseg.__file__))")
#   python $MMSEG/.mim/tools/train.py \
#       configs/mmseg/unet-s5-d16_fcn_shapes-cpu-64x64_unified-focal.py \
#       --work-dir work_dirs/mmseg_unified_focal
# mmseg's decode head calls loss_decode(seg_logits, seg_label, weight=seg_weight,
# ignore_index=255) and logs the result under the loss's loss_name (decode.loss_unified_focal).
_base_ = 'mmseg::unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py'
custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)

data_root = 'data/shapes/'
classes = ('background', 'circle', 'square', 'triangle', 'star')
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)  # one process (SyncBN needs a process group)

model = dict(
    # a quarter-width UNet (base_channels 16 instead of 64): a CPU-sized run
    backbone=dict(base_channels=16, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=16, channels=16, num_classes=len(classes), norm_cfg=norm_cfg,
        # _delete_: replace the base's CrossEntropyLoss dict instead of merging into it (its
        # use_sigmoid would reach UnifiedFocalLoss)
        loss_decode=dict(_delete_=True, type='UnifiedFocalLoss', tversky_weight=0.5,
                         delta=0.6, gamma=0.5, loss_weight=1.0)),
    auxiliary_head=dict(
        in_channels=32, channels=16, num_classes=len(classes), norm_cfg=norm_cfg,
        loss_decode=dict(_delete_=True, type='StableSoftmaxFocalLoss', gamma=0.5,
                         loss_weight=0.4)),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
shapes = dict(type='BaseSegDataset', data_root=data_root, img_suffix='.png',
              seg_map_suffix='.png', metainfo=dict(classes=classes))
train_dataloader = dict(
    _delete_=True, batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**shapes, data_prefix=dict(img_path='train', seg_map_path='train_seg'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    _delete_=True, batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**shapes, data_prefix=dict(img_path='val', seg_map_path='val_seg'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU', 'mDice'])
test_evaluator = val_evaluator

max_iters = 200
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
# from scratch, AdamW converges much faster than the DRIVE recipe's SGD in a few hundred steps
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=max_iters,
                        by_epoch=False)]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=100))
randomness = dict(seed=0)

# Audit every update: a non-finite one is skipped and reported in the work_dir
# (gradient_sanitizer_report.json)
custom_hooks = [dict(type='GradientSanitizerHook', policy='skip')]
