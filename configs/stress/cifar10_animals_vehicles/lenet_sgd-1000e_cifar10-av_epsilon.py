_base_ = ['./lenet_sgd-1000e_cifar10-av_exact.py']
# The published fix: (1 - p_t + eps)^gamma.
model = dict(loss=dict(stabilizer='epsilon', eps=1e-3))
