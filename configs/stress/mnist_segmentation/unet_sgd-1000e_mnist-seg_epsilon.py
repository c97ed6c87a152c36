_base_ = ['./unet_sgd-1000e_mnist-seg_exact.py']
# The published fix: (1 - p_t + eps)^gamma.
model = dict(loss=dict(stabilizer='epsilon', eps=1e-3))
