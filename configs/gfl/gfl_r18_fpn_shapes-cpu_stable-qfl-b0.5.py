# StableQualityFocalLoss (exact stabilizer) at beta = 0.5: finite gradients for beta < 1.
_base_ = './gfl_r18_fpn_shapes-cpu_base.py'
model = dict(bbox_head=dict(
    loss_cls=dict(type='StableQualityFocalLoss', use_sigmoid=True, beta=0.5, loss_weight=1.0,
                  stabilizer='exact')))
