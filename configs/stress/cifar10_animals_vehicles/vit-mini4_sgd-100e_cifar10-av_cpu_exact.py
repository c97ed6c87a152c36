# CPU-scale experiment (b), ViT: a 4-layer, 64-wide ViT on the native 32x32 images (4x4 patches),
# 100 epochs (39k SGD steps), data loading in the main process.
_base_ = ['./vit-b16_sgd-1000e_cifar10-av_exact.py']
model = dict(arch='mini4')
train_cfg = dict(max_epochs=100, val_interval=10)
train_dataloader = dict(num_workers=0, persistent_workers=False)
val_dataloader = dict(num_workers=0, persistent_workers=False)
