_base_ = ['./unet_sgd-1000e_mnist-t10k-seg_gpu_exact.py']
# The published epsilon fix: (1 - p_t + eps) ** gamma, eps = 1e-3.
model = dict(loss=dict(stabilizer='epsilon', eps=1e-3))
