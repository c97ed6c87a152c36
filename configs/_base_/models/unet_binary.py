# 2D U-Net (4 down / 4 up, 64 base channels) with one logit per pixel.
model = dict(
    type='UNetBinarySegmenter',
    in_channels=1,
    base_channels=64,
    loss=dict(type='StableFocalLoss', use_sigmoid=True, gamma=0.5, alpha=0.5, reduction='mean',
              loss_weight=1.0, stabilizer='exact'))
