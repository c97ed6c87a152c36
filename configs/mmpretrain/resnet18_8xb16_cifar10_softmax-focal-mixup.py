# MMPretrain's ResNet-18 on CIFAR-10 (its own config, inherited) trained with the stable softmax
# focal loss under Mixup, whose soft targets (N, 10) reach the loss as class probabilities.
#   MMPRETRAIN=$(python -c "import mmpretrain, os; print(os.path.dirname(mmpretrain.__file__))")
#   python $MMPRETRAIN/.mim/tools/train.py \
#       configs/mmpretrain/resnet18_8xb16_cifar10_softmax-focal-mixup.py \
#       --work-dir work_dirs/mmpretrain_softmax_focal
# CIFAR-10 is downloaded into data/cifar10 on first use (mmpretrain's CIFAR10 dataset).
# mmpretrain's heads call loss(cls_score, target, avg_factor=N): target is class indices, or
# the (N, C) gt_score that Mixup / CutMix / label smoothing produce.
_base_ = 'mmpretrain::resnet/resnet18_8xb16_cifar10.py'
custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)

model = dict(
    # _delete_: replace the base's CrossEntropyLoss dict instead of merging into it
    head=dict(loss=dict(_delete_=True, type='StableSoftmaxFocalLoss', gamma=0.5,
                        loss_weight=1.0)),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.2)))

# Audit every update: a non-finite one is skipped and reported in the work_dir
# (gradient_sanitizer_report.json)
custom_hooks = [dict(type='GradientSanitizerHook', policy='skip')]
