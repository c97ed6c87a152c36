_base_ = ['./lenet_sgd-600e_mnist-t10k-binary_cpu_exact.py']
# The original focal loss (torchvision's formula): NaN gradients once a logit saturates.
model = dict(loss=dict(stabilizer='none'))
