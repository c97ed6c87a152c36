# Stock mmdet QualityFocalLoss at beta = 2 (mmdet's default), named for the detection study.
_base_ = './gfl_r18_fpn_shapes-cpu_base.py'
