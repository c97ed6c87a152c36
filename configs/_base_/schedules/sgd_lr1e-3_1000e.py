_base_ = ['./sgd_lr1e-3_100e.py']
train_cfg = dict(max_epochs=1000, val_interval=50)
