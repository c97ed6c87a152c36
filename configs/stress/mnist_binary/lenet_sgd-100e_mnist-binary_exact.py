# Published experiment (a): the small CNN on MNIST made binary (digits <= threshold are positive),
# gamma = alpha = 0.5, SGD lr 1e-3 momentum 0.9, batch 64, 100 epochs (60k train images, 938
# steps per epoch). Sweep gamma / threshold / noise with tools/sweep.py or --cfg-options.
_base_ = [
    '../../_base_/models/lenet_binary.py', '../../_base_/datasets/mnist_binary.py',
    '../../_base_/schedules/sgd_lr1e-3_100e.py', '../../_base_/default_runtime.py'
]
