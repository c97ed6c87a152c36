# StableFocalLoss at gamma = 0.5, exact stabilizer (same loss values, finite gradients).
_base_ = './retinanet_r18_fpn_shapes-cpu_base.py'
model = dict(bbox_head=dict(
    loss_cls=dict(type='StableFocalLoss', use_sigmoid=True, gamma=0.5, alpha=0.25,
                  loss_weight=1.0, stabilizer='exact')))
