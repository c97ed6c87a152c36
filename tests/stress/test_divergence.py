"""DivergenceRecorderHook (alone, and with GradientSanitizerHook(policy='stop') as the
stress configs use it) and InterruptibleEpochBasedTrainLoop, through a real MMEngine Runner.

The saturation case is the stress test in miniature: a separable toy set and a high learning
rate drive the positive logits past float32 saturation (sigmoid(x) == 1 for x > ~16.6), where
the original focal loss ('none') with gamma = 0.5 has a NaN gradient; the 'exact' loss trains
on.
"""
import math

import pytest
import torch
from mmengine.runner import Runner

import focal_plugin  # noqa: F401  (registers models, datasets, hook, loop)
from focal_plugin.datasets.synthetic import write_synthetic_mnist
from focal_plugin.stress import read_divergence

torch.set_num_threads(1)

SATURATING_LR = 0.5


RECORDER = [dict(type='DivergenceRecorderHook')]
SANITIZER_AND_RECORDER = [dict(type='GradientSanitizerHook', policy='stop'),
                          dict(type='DivergenceRecorderHook')]


def make_runner(work_dir, data_root, stabilizer, max_epochs=6, lr=SATURATING_LR,
                hooks=RECORDER, **model_kw):
    dataset = dict(type='BinaryMNIST', data_root=data_root, split='test', threshold=4)
    return Runner(
        model=dict(type='LeNetBinaryClassifier',
                   loss=dict(type='StableFocalLoss', gamma=0.5, alpha=0.5,
                             stabilizer=stabilizer), **model_kw),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=dataset, batch_size=10, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(type='InterruptibleEpochBasedTrainLoop', max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        custom_hooks=hooks,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=100),
                           logger=dict(type='LoggerHook', interval=100)),
        randomness=dict(seed=0),
        experiment_name=f'{stabilizer}_{work_dir.name}',
    )


@pytest.fixture(scope='module')
def separable_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('separable')
    write_synthetic_mnist(str(root), split='test', num_samples=40, separable_at=4)
    return str(root)


def test_original_loss_stops_at_the_first_nan_gradient(tmp_path, separable_root):
    runner = make_runner(tmp_path, separable_root, 'none')
    runner.train()
    record = read_divergence(str(tmp_path))
    assert record['status'] == 'diverged'
    nonfinite = record['nonfinite']
    assert nonfinite['reason'].startswith('non-finite parameters')  # the loss itself was finite
    assert math.isfinite(nonfinite['last_finite_loss'])
    # 4 iterations per epoch; the failing one is where training ended, mid-epoch included.
    assert record['iters_per_epoch'] == 4
    assert runner.iter == nonfinite['iteration']
    assert runner.epoch == record['completed_epochs']  # the interrupted epoch did not complete
    assert nonfinite['epoch'] == record['completed_epochs'] + 1
    assert nonfinite['iteration'] == 4 * record['completed_epochs'] + nonfinite['iter_in_epoch']
    assert len(record['train_loss']) == record['completed_epochs']
    assert record['completed_epochs'] < record['max_epochs']
    assert not all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_without_stop_training_goes_on_and_the_first_failure_is_kept(tmp_path, separable_root):
    stopping = make_runner(tmp_path / 'stop', separable_root, 'none')
    stopping.train()
    runner = make_runner(tmp_path / 'go_on', separable_root, 'none',
                         hooks=[dict(type='DivergenceRecorderHook', stop=False)])
    runner.train()
    assert runner.iter == 6 * 4  # all epochs ran
    record = read_divergence(str(tmp_path / 'go_on'))
    assert record['status'] == 'diverged'
    assert record['nonfinite'] == read_divergence(str(tmp_path / 'stop'))['nonfinite']


def test_exact_loss_completes_the_same_run(tmp_path, separable_root):
    runner = make_runner(tmp_path, separable_root, 'exact')
    runner.train()
    record = read_divergence(str(tmp_path))
    assert record['status'] == 'completed' and record['nonfinite'] is None
    assert record['completed_epochs'] == 6 and len(record['train_loss']) == 6
    assert all(math.isfinite(v) for v in record['train_loss'])
    assert record['train_acc'][-1] == 1.0  # the toy set is separable
    assert record['positive_fraction'] == pytest.approx(0.5)
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_non_finite_loss_is_caught_at_the_first_iteration(tmp_path, separable_root):
    nan_weights = dict(type='Constant', val=float('nan'), layer='Linear')
    runner = make_runner(tmp_path, separable_root, 'exact', init_cfg=nan_weights)
    runner.train()
    record = read_divergence(str(tmp_path))
    assert record['status'] == 'diverged'
    assert record['nonfinite'] == dict(epoch=1, iteration=1, iter_in_epoch=1,
                                       reason='non-finite loss', last_finite_loss=None)
    assert record['completed_epochs'] == 0 and record['train_loss'] == []
    assert runner.iter == 1


def test_with_the_sanitizer_the_nan_update_is_never_applied(tmp_path, separable_root):
    alone = make_runner(tmp_path / 'alone', separable_root, 'none')
    alone.train()
    expected = read_divergence(str(tmp_path / 'alone'))['nonfinite']

    runner = make_runner(tmp_path / 'audited', separable_root, 'none',
                         hooks=SANITIZER_AND_RECORDER)
    runner.train()
    record = read_divergence(str(tmp_path / 'audited'))
    assert record['status'] == 'diverged'
    nonfinite = record['nonfinite']
    # the same step is found, before optimizer.step instead of after it
    assert (nonfinite['epoch'], nonfinite['iteration'], nonfinite['iter_in_epoch']) == \
        (expected['epoch'], expected['iteration'], expected['iter_in_epoch'])
    assert nonfinite['reason'] == 'GradientSanitizerHook: gradient (stopped)'
    assert record['completed_epochs'] == expected['epoch'] - 1
    assert len(record['train_loss']) == record['completed_epochs']
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    assert runner.iter == nonfinite['iteration'] - 1  # the failing update was not applied


def test_with_the_sanitizer_the_exact_loss_completes(tmp_path, separable_root):
    make_runner(tmp_path, separable_root, 'exact', hooks=SANITIZER_AND_RECORDER).train()
    record = read_divergence(str(tmp_path))
    assert record['status'] == 'completed' and record['completed_epochs'] == 6
