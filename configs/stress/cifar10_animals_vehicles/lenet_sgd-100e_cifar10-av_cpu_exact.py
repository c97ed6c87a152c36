# CPU-scale experiment (b), CNN: 100 epochs (39k SGD steps), data loading in the main process.
# Needs CIFAR-10 (downloaded by torchvision into data/cifar10, or placed there).
_base_ = ['./lenet_sgd-1000e_cifar10-av_exact.py']
train_cfg = dict(max_epochs=100, val_interval=10)
train_dataloader = dict(num_workers=0, persistent_workers=False)
val_dataloader = dict(num_workers=0, persistent_workers=False)
