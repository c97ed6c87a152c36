# Published experiment (c): 2D U-Net (64 base channels) segmenting MNIST digits (mask = pixel
# > 0.5, noise added after the mask), gamma = alpha = 0.5, SGD lr 1e-3 momentum 0.9, batch 64,
# 1000 epochs.
_base_ = [
    '../../_base_/models/unet_binary.py', '../../_base_/datasets/mnist_segmentation.py',
    '../../_base_/schedules/sgd_lr1e-3_1000e.py', '../../_base_/default_runtime.py'
]
