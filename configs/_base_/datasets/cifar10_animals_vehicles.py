# CIFAR-10 vehicles (positive) vs animals, 4:6, images normalized to [-1, 1].
data_root = 'data/cifar10'
train_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CIFAR10AnimalsVehicles', data_root=data_root, split='train',
                 download=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CIFAR10AnimalsVehicles', data_root=data_root, split='test',
                 download=True))
val_evaluator = dict(type='BinaryAccuracy')
