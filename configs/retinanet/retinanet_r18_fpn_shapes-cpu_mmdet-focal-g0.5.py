# Stock mmdet FocalLoss at gamma = 0.5 (the unstable regime; on CPU mmdet uses its Python
# focal loss, which is the form that produces NaN gradients once logits saturate).
_base_ = './retinanet_r18_fpn_shapes-cpu_base.py'
model = dict(bbox_head=dict(
    loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=0.5, alpha=0.25, loss_weight=1.0)))
