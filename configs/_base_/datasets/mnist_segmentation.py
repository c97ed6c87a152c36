# MNIST digit segmentation: mask = clean pixel > 0.5, noise added to the input afterwards.
# Change noise in BOTH dataloaders (train_dataloader.dataset.noise, val_dataloader.dataset.noise).
data_root = 'data/mnist'
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='MNISTSegmentation', data_root=data_root, split='train', noise=0.0,
                 seed=0, download=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='MNISTSegmentation', data_root=data_root, split='test', noise=0.0,
                 seed=1, download=True))
val_evaluator = dict(type='BinaryAccuracy')
