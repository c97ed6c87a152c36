# StableQualityFocalLoss (exact stabilizer) at beta = 2: the drop-in for the base's
# mmdet QualityFocalLoss, same values per call.
_base_ = './gfl_r18_fpn_shapes-cpu_base.py'
model = dict(bbox_head=dict(
    loss_cls=dict(type='StableQualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0,
                  stabilizer='exact')))
