# Published experiment (b), CNN: the small CNN on 3x32x32 CIFAR-10, vehicles vs animals (4:6),
# gamma = alpha = 0.5, SGD lr 1e-3 momentum 0.9, batch 128, 1000 epochs.
_base_ = [
    '../../_base_/models/lenet_binary.py', '../../_base_/datasets/cifar10_animals_vehicles.py',
    '../../_base_/schedules/sgd_lr1e-3_1000e.py', '../../_base_/default_runtime.py'
]
model = dict(in_channels=3, input_size=32)
