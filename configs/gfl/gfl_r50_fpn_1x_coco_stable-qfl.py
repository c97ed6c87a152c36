# GFL R50-FPN 1x on COCO with StableQualityFocalLoss (exact stabilizer) in place of mmdet's
# QualityFocalLoss: identical values at beta = 2, finite gradients for any beta.
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)
model = dict(bbox_head=dict(
    loss_cls=dict(type='StableQualityFocalLoss', use_sigmoid=True, beta=2.0,
                  loss_weight=1.0, stabilizer='exact')))
# Audit every update before the optimizer applies it; skip non-finite ones (GradientSanitizerHook).
custom_hooks = [dict(type='GradientSanitizerHook', policy='skip')]
