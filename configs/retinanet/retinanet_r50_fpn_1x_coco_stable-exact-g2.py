# RetinaNet R50-FPN 1x on COCO with StableFocalLoss at the paper's gamma = 2: the same loss
# values as mmdet's FocalLoss (parity run), finite gradients guaranteed.
# Data: COCO 2017 under data/coco/ as mmdet expects (mmdet's coco_detection.py).
#   single GPU:  python tools/train.py CONFIG         (CONFIG = this file's path)
#   8 GPUs:      bash tools/dist_train.sh CONFIG 8
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)
model = dict(bbox_head=dict(
    loss_cls=dict(type='StableFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                  loss_weight=1.0, stabilizer='exact')))
# Audit every update before the optimizer applies it; skip non-finite ones (GradientSanitizerHook).
custom_hooks = [dict(type='GradientSanitizerHook', policy='skip')]
