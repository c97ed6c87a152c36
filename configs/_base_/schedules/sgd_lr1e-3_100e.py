# The published schedule: plain SGD, lr 1e-3, momentum 0.9, constant learning rate.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=1e-3, momentum=0.9))
# Like EpochBasedTrainLoop, but a stop request (first non-finite step) ends the epoch at once.
train_cfg = dict(type='InterruptibleEpochBasedTrainLoop', max_epochs=100, val_interval=10)
val_cfg = dict(type='ValLoop')
