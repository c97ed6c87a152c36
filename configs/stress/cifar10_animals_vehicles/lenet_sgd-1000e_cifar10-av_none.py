_base_ = ['./lenet_sgd-1000e_cifar10-av_exact.py']
# The original focal loss (torchvision's formula): NaN gradients once a logit saturates.
model = dict(loss=dict(stabilizer='none'))
