# The published small CNN with one logit; the focal loss settings of the study (gamma = alpha =
# 0.5). The stabilizer ('none' = original, 'epsilon', 'exact') is set by each stress config.
model = dict(
    type='LeNetBinaryClassifier',
    in_channels=1,
    input_size=28,
    loss=dict(type='StableFocalLoss', use_sigmoid=True, gamma=0.5, alpha=0.5, reduction='mean',
              loss_weight=1.0, stabilizer='exact'))
