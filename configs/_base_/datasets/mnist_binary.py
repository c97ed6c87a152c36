# MNIST turned binary: digits <= threshold are positive. threshold (0..8) and noise (uniform
# amplitude: 0, 0.5, 0.75 in the study) must be changed in BOTH dataloaders, e.g.
#   --cfg-options train_dataloader.dataset.threshold=4 val_dataloader.dataset.threshold=4
data_root = 'data/mnist'
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='BinaryMNIST', data_root=data_root, split='train', threshold=0,
                 noise=0.0, seed=0, download=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='BinaryMNIST', data_root=data_root, split='test', threshold=0,
                 noise=0.0, seed=1, download=True))
val_evaluator = dict(type='BinaryAccuracy')
