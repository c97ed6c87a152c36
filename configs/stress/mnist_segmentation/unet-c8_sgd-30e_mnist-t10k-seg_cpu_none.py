_base_ = ['./unet-c8_sgd-30e_mnist-t10k-seg_cpu_exact.py']
# The original focal loss (torchvision's formula): NaN gradients once a logit saturates.
model = dict(loss=dict(stabilizer='none'))
