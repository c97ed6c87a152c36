# CPU-scale experiment (c): a narrower U-Net (8 base channels, 1/64 of the compute), 30 epochs of
# the 10k test split (4.7k SGD steps).
_base_ = ['./unet_sgd-1000e_mnist-seg_exact.py']
model = dict(base_channels=8)
train_cfg = dict(max_epochs=30, val_interval=30)
default_hooks = dict(logger=dict(interval=157), checkpoint=dict(interval=5))

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
