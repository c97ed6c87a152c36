# Experiment (c) at the published width (64 base channels) on a GPU, trained on the real 10k
# MNIST split (tools/gpu_stress.sh runs this and its 'none' twin side by side). A checkpoint of this
# model with SGD momentum is about 250 MB, so the run goes in one go: no per-epoch checkpoint,
# one at the end; no validation (these runs measure when training breaks, the divergence
# record keeps the loss and the logit extremes of every epoch).
_base_ = ['./unet_sgd-1000e_mnist-seg_exact.py']
data_root = '{{$FOCAL_MNIST_T10K:data/mnist}}'
train_dataloader = dict(
    num_workers=2, persistent_workers=True,
    dataset=dict(data_root=data_root, split='test', download=False))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, split='test', download=False))
train_cfg = dict(val_interval=100000)
default_hooks = dict(logger=dict(interval=157), checkpoint=dict(interval=100000))
custom_hooks = [
    dict(type='GradientSanitizerHook', policy='stop'),
    dict(type='DivergenceRecorderHook', stop=True),
]
