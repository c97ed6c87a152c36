_base_ = ['./lenet_sgd-100e_mnist-binary_exact.py']
# The original focal loss (torchvision's formula): NaN gradients once a logit saturates.
model = dict(loss=dict(stabilizer='none'))
