_base_ = ['./unet_sgd-1000e_mnist-t10k-seg_gpu_exact.py']
# The original focal loss (torchvision's formula): NaN gradients once a logit saturates.
model = dict(loss=dict(stabilizer='none'))
