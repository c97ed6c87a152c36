_base_ = ['./unet-c8_sgd-30e_mnist-t10k-seg_cpu_exact.py']
# The published fix: (1 - p_t + eps)^gamma.
model = dict(loss=dict(stabilizer='epsilon', eps=1e-3))
