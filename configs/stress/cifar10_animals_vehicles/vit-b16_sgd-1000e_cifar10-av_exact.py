# Published experiment (b), ViT: ViT-B/16 at 224x224 from scratch (CIFAR images resized in the
# model), vehicles vs animals, gamma = alpha = 0.5, SGD lr 1e-3 momentum 0.9, batch 128,
# 1000 epochs.
_base_ = [
    '../../_base_/models/vit_b16_binary.py', '../../_base_/datasets/cifar10_animals_vehicles.py',
    '../../_base_/schedules/sgd_lr1e-3_1000e.py', '../../_base_/default_runtime.py'
]
