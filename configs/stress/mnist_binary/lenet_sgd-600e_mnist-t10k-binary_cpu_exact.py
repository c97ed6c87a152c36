# CPU-scale experiment (a): 600 epochs of the 10k test split = 94.2k SGD steps, the same number
# of optimizer steps as the published 100 epochs of the 60k train split (93.8k); the failure's
# onset is counted in steps, not epochs.
_base_ = ['./lenet_sgd-100e_mnist-binary_exact.py']
train_cfg = dict(max_epochs=600, val_interval=600)
default_hooks = dict(logger=dict(interval=157), checkpoint=dict(interval=50))

# CPU scale: the real MNIST test split (10k images, offline copy) for training and validation,
# data loading in the main process. Validation is on the training images: these runs measure
# when training breaks, not generalization. The folder holding t10k-images-idx3-ubyte.gz and
# t10k-labels-idx1-ubyte.gz comes from FOCAL_MNIST_T10K (default data/mnist, where the full
# configs download MNIST).
data_root = '{{$FOCAL_MNIST_T10K:data/mnist}}'
train_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, split='test', download=False))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, split='test', download=False))
