"""The log of a run with contained updates reads right: MMEngine's window averages (the
``loss: ...`` of every log line and of ``scalars.json``) are not poisoned by the NaN/Inf of an
update the hook skipped or sanitized, the hook's counters stay on every line, and under
``'warn'`` (update applied) the NaN stays: it is the truth of the run.

Real Runner, LoggerHook every iteration, LogProcessor's default window (10), the run's own
``scalars.json``; each logged mean is checked against the mean of the iterations' own step
outputs, recorded by a hook of the lowest priority."""
import glob
import json
import math
import os.path as osp

import numpy as np
import pytest
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from sanitizer_toys import FaultInjectionHook, make_runner

from focal_plugin.hooks.log_window import forget_nonfinite_scalars

FAULT_ITER = 4  # 0-based; the run has 14 iterations, so 9 lines follow within one window
WINDOW = 10


class StepOutputs(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss'].detach()))


def _logged(work_dir):
    (path,) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f if '"loss"' in line]


def _run(work_dir, policy, fault, accumulate):
    outputs = StepOutputs()
    runner = make_runner(
        work_dir, hook=dict(type='GradientSanitizerHook', policy=policy), max_iters=14,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
                           accumulative_counts=accumulate),
        extra_hooks=(FaultInjectionHook({FAULT_ITER: fault}), outputs),
        checkpoint_interval=100)
    runner.train()
    return _logged(work_dir), outputs.losses


@pytest.mark.parametrize('accumulate', [1, 2])
@pytest.mark.parametrize('fault', ['loss_nan', 'loss_inf', 'grad_nan'])
@pytest.mark.parametrize('policy', ['skip', 'sanitize'])
def test_contained_updates_leave_the_window_means_finite(work_dir, policy, fault, accumulate):
    lines, losses = _run(work_dir, policy, fault, accumulate)
    assert len(lines) == len(losses) == 14
    counter = f'nonfinite_{policy}d' if policy == 'sanitize' else 'nonfinite_skipped'
    # with accumulation the update (iterations 4 and 5) is decided at its step, iteration 5
    decided = FAULT_ITER + accumulate - 1
    assert fault.startswith('grad') or not math.isfinite(losses[FAULT_ITER])
    for i, line in enumerate(lines):
        assert line['iter'] == i + 1
        if i < decided:
            continue
        finite = [v for v in losses[:i + 1] if math.isfinite(v)]
        assert line['loss'] == pytest.approx(np.mean(finite[-WINDOW:]), rel=1e-6), (i, line)
        assert line[counter] == 1, line


@pytest.mark.parametrize('fault', ['loss_nan', 'grad_nan'])
def test_warn_keeps_the_nan_of_an_applied_update(work_dir, fault):
    lines, losses = _run(work_dir, 'warn', fault, 1)
    assert lines[FAULT_ITER]['nonfinite_warned'] == 1
    assert math.isnan(lines[FAULT_ITER + 1]['loss'])  # NaN weights after a NaN update
    assert all(math.isnan(line['loss']) for line in lines[FAULT_ITER + 1:])


def test_forget_nonfinite_scalars_only_touches_the_last_iterations():
    hub = MessageHub('log_window_unit')
    for value in (1.0, float('nan'), 2.0, float('inf'), 3.0, float('nan')):
        hub.update_scalar('train/loss', value)
    hub.update_scalar('train/only_nan', float('nan'))
    hub.update_scalar('val/loss', float('nan'))
    changed = forget_nonfinite_scalars(hub, iterations=3)
    assert sorted(changed) == ['train/loss', 'train/only_nan']
    values, counts = hub.get_scalar('train/loss').data
    assert values[:2].tolist()[0] == 1.0 and math.isnan(values[1])  # older: left alone
    assert values[2:].tolist() == [2.0, 3.0] and counts.tolist() == [1, 1, 1, 1]
    assert 'train/only_nan' not in hub.log_scalars  # recreated by its next update
    hub.update_scalar('train/only_nan', 5.0)
    assert hub.get_scalar('train/only_nan').current() == 5.0
    assert math.isnan(hub.get_scalar('val/loss').current())
    assert forget_nonfinite_scalars(hub, iterations=2) == []  # [2, 3]: nothing to do
