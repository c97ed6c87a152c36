# RetinaNet R50-FPN 1x on COCO with StableFocalLoss at gamma = 0.5, the regime where the
# original focal loss's gradient turns NaN once a logit saturates. 'exact' keeps the loss
# value and makes the gradient finite.
_base_ = './retinanet_r50_fpn_1x_coco_stable-exact-g2.py'
model = dict(bbox_head=dict(loss_cls=dict(gamma=0.5)))
