_base_ = ['./vit-mini4_sgd-100e_cifar10-av_cpu_exact.py']
# The published fix: (1 - p_t + eps)^gamma.
model = dict(loss=dict(stabilizer='epsilon', eps=1e-3))
