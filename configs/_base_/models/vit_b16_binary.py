# ViT-B/16 at 224x224 (torchvision's VisionTransformer), from scratch, one logit per image.
model = dict(
    type='ViTBinaryClassifier',
    arch='b16',
    loss=dict(type='StableFocalLoss', use_sigmoid=True, gamma=0.5, alpha=0.5, reduction='mean',
              loss_weight=1.0, stabilizer='exact'))
