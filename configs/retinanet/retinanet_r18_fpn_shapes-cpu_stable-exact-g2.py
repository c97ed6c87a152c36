# StableFocalLoss at the paper's gamma = 2 (parity with stock RetinaNet).
_base_ = './retinanet_r18_fpn_shapes-cpu_base.py'
model = dict(bbox_head=dict(
    loss_cls=dict(type='StableFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                  loss_weight=1.0, stabilizer='exact')))
