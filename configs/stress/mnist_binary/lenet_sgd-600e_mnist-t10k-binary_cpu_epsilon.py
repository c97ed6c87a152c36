_base_ = ['./lenet_sgd-600e_mnist-t10k-binary_cpu_exact.py']
# The published fix: (1 - p_t + eps)^gamma.
model = dict(loss=dict(stabilizer='epsilon', eps=1e-3))
