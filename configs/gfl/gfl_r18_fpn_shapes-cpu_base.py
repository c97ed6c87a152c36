# GFL on the offline "shapes" dataset, sized for a 2-core CPU: the RetinaNet shapes setup
# (data, pipelines, half-width ResNet-18 from scratch, AdamW, schedule, audit hook) with
# mmdet's GFL head in place of RetinaNet's (head and assigner as in mmdet's
# gfl_r50_fpn_1x_coco.py). The variants in this folder only change loss_cls; this base is
# mmdet's stock QualityFocalLoss at beta = 2.
_base_ = '../retinanet/retinanet_r18_fpn_shapes-cpu_base.py'

model = dict(
    type='GFL',
    bbox_head=dict(
        _delete_=True,
        type='GFLHead', num_classes=4, in_channels=64, feat_channels=64, stacked_convs=2,
        # one square anchor per location, 32 px at stride 8 (mmdet: 8 x stride); ATSS
        # adapts its IoU threshold per object, so the 12-77 px shapes find positives
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=4,
                              scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        reg_max=16,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(_delete_=True, assigner=dict(type='ATSSAssigner', topk=9),
                   allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(_delete_=True, nms_pre=500, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=50))
