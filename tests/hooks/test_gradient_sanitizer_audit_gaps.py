"""Issue 22's reproductions on a real Runner: a wrapper stepped twice in one iteration, legitimate
+-inf buffers, buffers replaced by assignment, an unwritable report file."""
from __future__ import annotations

import json
import os.path as osp

import pytest
import torch
from sanitizer_toys import (
    NAN,
    ToyModel,
    all_finite,
    build_model,
    checkpoints,
    make_runner,
    model_state,
    sanitizer_of,
)

SKIP = dict(type='GradientSanitizerHook', policy='skip')


class SteppedTwice(ToyModel):
    """Two updates of one optimizer per iteration (k discriminator steps, a batch in chunks);
    the gradient of the second update of iteration ``bad_iter`` is NaN."""

    bad_iter = 3

    def train_step(self, data, optim_wrapper):
        data = self.data_preprocessor(data, True)
        log_vars = {}
        for chunk in range(2):
            losses = self._run_forward(data, mode='loss')
            loss, log_vars = self.parse_losses(losses)
            if chunk == 1 and self.iteration == self.bad_iter:
                loss = loss * NAN
            optim_wrapper.update_params(loss)
        self.iteration += 1
        return log_vars


def test_every_step_of_an_iteration_is_audited(tmp_path):
    torch.manual_seed(0)
    model = SteppedTwice()
    model.iteration = 0
    runner = make_runner(str(tmp_path), hook=SKIP, model=model, max_iters=6)
    runner.train()
    hook = sanitizer_of(runner)
    assert hook.counters['skipped'] == 1
    assert all_finite(model_state(runner))
    assert hook.first_event['iter'] == SteppedTwice.bad_iter + 1


class MaskedModel(ToyModel):
    """A persistent -inf buffer (an attention mask) and +-inf observer min/max: legitimate."""

    def __init__(self):
        super().__init__()
        self.register_buffer('attn_mask', torch.tensor([0.0, float('-inf'), 0.0]))
        self.register_buffer('observer_min', torch.tensor(float('inf')))
        self.nan_into_mask_at = None

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = super().forward(inputs, data_samples, mode)
        if mode == 'loss' and self.nan_into_mask_at is not None:
            self.nan_into_mask_at -= 1
            if self.nan_into_mask_at == 0:
                self.attn_mask[0] = NAN  # NaN appearing in it is corruption
        return out


@pytest.mark.parametrize('check_params', [False, True])
def test_legitimate_infinite_buffers_do_not_block_training_or_checkpoints(tmp_path, check_params):
    torch.manual_seed(0)
    runner = make_runner(str(tmp_path), hook=dict(SKIP, check_params=check_params),
                         model=MaskedModel(), max_iters=8, checkpoint_interval=4)
    runner.train()
    hook = sanitizer_of(runner)
    assert runner.iter == 8 and not hook.stopped
    assert hook.counters['refused_checkpoints'] == 0 and sum(hook.counters.values()) == 0
    assert [osp.basename(p) for p in checkpoints(str(tmp_path))] == ['iter_4.pth', 'iter_8.pth']


def test_nan_in_a_legitimately_infinite_buffer_is_still_caught(tmp_path):
    torch.manual_seed(0)
    model = MaskedModel()
    model.nan_into_mask_at = 5
    runner = make_runner(str(tmp_path), hook=dict(type='GradientSanitizerHook', policy='skip',
                                                  check_params=True),
                         model=model, max_iters=8, checkpoint_interval=4)
    runner.train()
    hook = sanitizer_of(runner)
    assert hook.counters['events'] >= 1
    assert [osp.basename(p) for p in checkpoints(str(tmp_path))] == ['iter_4.pth']


class ReassignedBuffer(ToyModel):
    """Replaces a registered buffer by assignment in forward (a running statistic kept as
    ``self.buf = new``); at ``bad_iter`` the batch turns it NaN (a NaN input)."""

    bad_iter = 3

    def __init__(self):
        super().__init__()
        self.register_buffer('running', torch.zeros(()))
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = super().forward(inputs, data_samples, mode)
        if mode == 'loss':
            self.calls += 1
            value = out['loss_reg'].detach()
            if self.calls == self.bad_iter + 1:
                value = value * NAN
                out['loss_reg'] = out['loss_reg'] * NAN
            self.running = 0.9 * self.running + 0.1 * value  # a new tensor each time
        return out


def test_a_buffer_replaced_by_assignment_is_restored_by_name(tmp_path):
    torch.manual_seed(0)
    runner = make_runner(str(tmp_path), hook=dict(SKIP, check_params=True),
                         model=ReassignedBuffer(), max_iters=6, checkpoint_interval=3)
    runner.train()  # no NonFiniteCheckpointError, no stop: the live buffer was restored
    hook = sanitizer_of(runner)
    assert hook.counters['skipped'] == 1 and not hook.stopped
    assert torch.isfinite(runner.model.running)
    assert all_finite(model_state(runner))


def test_an_unwritable_report_file_is_refused_before_training(tmp_path):
    (tmp_path / 'a_file').write_text('')
    runner = make_runner(str(tmp_path), hook=dict(SKIP, report_file='a_file/report.json'),
                         model=build_model(), max_iters=2)
    with pytest.raises(ValueError, match='report_file: .*does not exist'):
        runner.train()


def test_a_report_that_cannot_be_written_later_does_not_end_training(tmp_path, monkeypatch):
    from focal_plugin.hooks import report as report_module

    def full_disk(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(report_module, 'write_json', full_disk)
    torch.manual_seed(0)
    model = SteppedTwice()
    model.iteration = 0
    runner = make_runner(str(tmp_path), hook=SKIP, model=model, max_iters=6)
    runner.train()  # the NaN update is skipped and reported in the log; the run goes on
    assert runner.iter == 6 and sanitizer_of(runner).counters['skipped'] == 1
    assert not osp.exists(tmp_path / 'gradient_sanitizer_report.json') or json.load(
        open(tmp_path / 'gradient_sanitizer_report.json'))


def test_resume_after_a_stop_continues_past_the_offending_batch(tmp_path):
    """Epoch-based loop, policy stop, sample 22 corrupt (batch 5 of every epoch, no shuffle):
    the resumed run skips the 6 batches of epoch 1 consumed before the stop instead of training
    them again and stopping on the same batch, every time."""
    from sanitizer_toys import ToyDataset
    work_dir = str(tmp_path)

    def run(**kwargs):
        torch.manual_seed(0)
        runner = make_runner(work_dir, hook=dict(type='GradientSanitizerHook', policy='stop'),
                             max_epochs=2, dataset=ToyDataset(poison={22: float('inf')}),
                             **kwargs)
        runner.train()
        return runner

    first = run()
    assert (first.epoch, first.iter) == (0, 5)
    second = run(resume=True)
    # the checkpoint of the stop counts the offending iteration (6); then the 10 batches left
    # in epoch 1 and batches 0-4 of epoch 2, which stops at its batch 5 again: 6 + 10 + 5
    assert (second.epoch, second.iter) == (1, 21)
    assert sanitizer_of(second).counters['events'] == 2
    assert all_finite(model_state(second))


def test_a_checkpoint_refused_mid_epoch_stops_an_epoch_based_run_at_once(tmp_path):
    from sanitizer_toys import FaultInjectionHook
    runner = make_runner(str(tmp_path), hook=SKIP, max_epochs=2, checkpoint_interval=4,
                         checkpoint_by_epoch=False,
                         extra_hooks=(FaultInjectionHook({5: 'param_nan_after_step'}),))
    runner.train()
    hook = sanitizer_of(runner)
    assert hook.counters['refused_checkpoints'] == 1 and hook.stopped
    assert runner.iter == 7 and runner.epoch == 0  # the save due after iteration 8 was refused
    assert [osp.basename(p) for p in checkpoints(str(tmp_path))] == ['iter_4.pth']
