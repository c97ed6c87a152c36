# Stock mmdet QualityFocalLoss at beta = 0.5: |y - sigma|**beta has an infinite slope at the
# cusp and at saturation (the unstable regime on the CPU path that autograd differentiates).
_base_ = './gfl_r18_fpn_shapes-cpu_base.py'
model = dict(bbox_head=dict(
    loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=0.5, loss_weight=1.0)))
