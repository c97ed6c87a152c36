# Stock mmdet FocalLoss at gamma = 2 (mmdet's default, the stable regime): the baseline of the
# detection study (results/detection/) and the run that sets its schedule length.
_base_ = './retinanet_r18_fpn_shapes-cpu_base.py'
model = dict(bbox_head=dict(
    loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)))
