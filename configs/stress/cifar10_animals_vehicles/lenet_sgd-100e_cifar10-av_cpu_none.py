_base_ = ['./lenet_sgd-100e_cifar10-av_cpu_exact.py']
# The original focal loss (torchvision's formula): NaN gradients once a logit saturates.
model = dict(loss=dict(stabilizer='none'))
