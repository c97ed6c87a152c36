"""Configurations a user builds beyond the defaults (issue 34), each with a real Runner:
torch.compile, checkpoints inside accumulation windows, complex parameters, a model that grows
during training, finite inputs that corrupt BatchNorm statistics, ``save_best`` unset, and a
stop decided at the end of an epoch. ``test_gradient_sanitizer_matrix.py`` crosses them."""
import json
import os.path as osp

import pytest
import torch
from sanitizer_toys import (
    NAN,
    AttachHeadHook,
    FaultInjectionHook,
    GrowingToyModel,
    RecordHook,
    SpectralToyModel,
    ToyDataset,
    ValRecordHook,
    all_finite,
    build_model,
    checkpoint_is_finite,
    checkpoints,
    make_runner,
    model_state,
    sanitizer_of,
)


def read_report(work_dir):
    with open(osp.join(work_dir, 'gradient_sanitizer_report.json')) as f:
        return json.load(f)


def hook_cfg(**kwargs):
    return dict(type='GradientSanitizerHook', **kwargs)


def finished_with_finite_checkpoints(runner, work_dir, max_iters):
    assert runner.iter == max_iters
    assert all_finite(model_state(runner))
    saved = checkpoints(work_dir)
    assert saved and all(checkpoint_is_finite(p) for p in saved)
    return saved


# ---------------------------------------------------------------- 1. torch.compile
@pytest.mark.parametrize('backend', ['eager', 'aot_eager'])
def test_compiled_train_step_audits_and_reports_as_in_eager_mode(work_dir, backend):
    # MMEngine compiles `train_step`; the audit runs inside it (update_params -> step).
    # Both backends only trace (no code generation), which is where the event got lost.
    torch._dynamo.reset()
    dataset = ToyDataset(64, poison={9: NAN})  # iteration 3 (samples 8-11)
    runner = make_runner(work_dir, hook_cfg(policy='skip'), max_iters=8, dataset=dataset,
                         checkpoint_interval=4, cfg=dict(compile=dict(backend=backend)))
    runner.train()
    finished_with_finite_checkpoints(runner, work_dir, 8)
    hook = sanitizer_of(runner)
    assert hook.counters['skipped'] == hook.counters['events'] == 1
    (event,) = read_report(work_dir)['events']
    assert (event['kind'], event['iter'], event['action']) == ('gradient', 3, 'skipped')
    names = {t['name'] for t in event['ranks'][0]['nonfinite_tensors']}
    assert 'backbone.0.weight' in names
    assert [s['sample_idx'] for s in event['ranks'][0]['batch']] == [8, 9, 10, 11]


# ------------------------------------------- 2. a checkpoint inside an accumulation window
def test_checkpoint_inside_accumulation_window_loses_only_that_window(work_dir):
    # windows 1-4, 5-8, 9-12; the NaN sample is in iteration 5, the save at 5 comes before
    # the window's verdict at 8, with NaN already in the BatchNorm statistics
    record = RecordHook()
    runner = make_runner(work_dir, hook_cfg(policy='skip'), max_iters=12,
                         dataset=ToyDataset(64, poison={17: NAN}), checkpoint_interval=5,
                         optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
                                            accumulative_counts=4),
                         extra_hooks=(record,))
    runner.train()
    saved = finished_with_finite_checkpoints(runner, work_dir, 12)
    assert [osp.basename(p) for p in saved] == ['iter_10.pth', 'iter_12.pth', 'iter_5.pth']
    hook = sanitizer_of(runner)
    assert hook.counters['skipped'] == 1 and hook.counters['refused_checkpoints'] == 0
    (event,) = read_report(work_dir)['events']
    assert (event['iter'], event['action']) == (8, 'skipped')
    # the window is dropped whole: after it, the state of before it (iteration 4)
    assert all(torch.equal(record.states[7][k], record.states[3][k]) for k in record.states[3])
    # iter_5.pth holds the state the run has once the window is dropped
    saved_5 = torch.load(saved[2], map_location='cpu', weights_only=False)['state_dict']
    assert all(torch.equal(saved_5[k], record.states[3][k]) for k in saved_5)


def test_epoch_end_inside_accumulation_window_loses_only_that_window(work_dir):
    # 10 iterations per epoch, windows of 4: the epoch-1 save falls in window 9-12
    runner = make_runner(work_dir, hook_cfg(policy='skip'), max_epochs=2,
                         dataset=ToyDataset(40, poison={37: NAN}), checkpoint_interval=1,
                         optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
                                            accumulative_counts=4))
    runner.train()
    saved = finished_with_finite_checkpoints(runner, work_dir, 20)
    assert [osp.basename(p) for p in saved] == ['epoch_1.pth', 'epoch_2.pth']
    # the sample comes back in epoch 2, at iteration 20 (the end of window 17-20)
    events = read_report(work_dir)['events']
    assert [(e['iter'], e['epoch'], e['action']) for e in events] == [(12, 2, 'skipped'),
                                                                      (20, 2, 'skipped')]
    assert runner.epoch == 2


# ------------------------------------------------------------- 3. complex parameters
@pytest.mark.parametrize('policy', ['skip', 'sanitize'])
def test_nan_in_a_complex_gradient_is_audited(work_dir, policy):
    record = RecordHook()
    runner = make_runner(work_dir, hook_cfg(policy=policy), model=SpectralToyModel(),
                         max_iters=8, extra_hooks=(FaultInjectionHook({2: 'grad_nan'},
                                                                      param='spectral'),
                                                   record))
    runner.train()
    finished_with_finite_checkpoints(runner, work_dir, 8)
    assert all(record.finite_after_iter)
    assert sanitizer_of(runner).counters[
        'skipped' if policy == 'skip' else 'sanitized'] == 1
    (event,) = read_report(work_dir)['events']
    (bad,) = event['ranks'][0]['nonfinite_tensors']
    assert (event['iter'], bad['name'], bad['nan']) == (3, 'spectral', 3)
    if policy == 'skip':
        assert torch.equal(record.states[2]['spectral'], record.states[1]['spectral'])


def test_nan_written_into_a_complex_parameter_is_refused_in_checkpoints(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='skip', check_params=True),
                         model=SpectralToyModel(), max_iters=8,
                         extra_hooks=(FaultInjectionHook({2: 'param_nan_after_step'},
                                                         param='spectral'),))
    runner.train()
    hook = sanitizer_of(runner)
    assert hook.stopped and runner.iter == 3
    assert all(checkpoint_is_finite(p) for p in checkpoints(work_dir))
    assert read_report(work_dir)['events'][0]['ranks'][0]['nonfinite_tensors'][0]['name'] \
        == 'spectral'


# ------------------------------------------------- 4. modules and param groups added mid-run
def test_module_and_param_group_added_mid_run_are_restored_and_named(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='skip'), model=GrowingToyModel(),
                         max_iters=12, dataset=ToyDataset(64, poison={21: NAN}),
                         extra_hooks=(AttachHeadHook(at=3),))
    runner.train()
    finished_with_finite_checkpoints(runner, work_dir, 12)
    hook = sanitizer_of(runner)
    assert hook.counters['skipped'] == 1 and hook.counters['refused_checkpoints'] == 0
    (event,) = read_report(work_dir)['events']
    names = {t['name'] for t in event['ranks'][0]['nonfinite_tensors']}
    assert event['iter'] == 6 and {'extra.0.weight', 'extra.3.weight'} <= names
    assert not any(name.startswith('<') for name in names)
    assert sorted(event['restored_buffers']) == sorted(
        f'{m}.{b}' for m in ('backbone.1', 'extra.1')
        for b in ('running_mean', 'running_var', 'num_batches_tracked'))


# ----------------------------- 5. a finite input that sends BatchNorm statistics to inf
@pytest.mark.parametrize('check_params', [False, True])
def test_finite_huge_input_restores_batchnorm_statistics_and_goes_on(work_dir, check_params):
    record = RecordHook()
    runner = make_runner(work_dir, hook_cfg(policy='skip', check_params=check_params),
                         max_iters=12, dataset=ToyDataset(64, poison={21: 1e30}),
                         extra_hooks=(record,))
    runner.train()
    finished_with_finite_checkpoints(runner, work_dir, 12)
    assert all(record.finite_after_iter)
    hook = sanitizer_of(runner)
    assert not hook.stopped and hook.counters['refused_checkpoints'] == 0
    assert hook.counters['restored'] == hook.counters['events'] == 1
    (event,) = read_report(work_dir)['events']
    assert (event['kind'], event['action'], event['iter']) == ('buffer', 'restored', 6)
    assert event['ranks'][0]['nonfinite_tensors'][0]['name'] == 'backbone.1.running_var'
    # the gradients were finite: the update was applied, only the statistics came back
    assert not torch.equal(record.states[5]['head.weight'], record.states[4]['head.weight'])
    assert torch.equal(record.states[5]['backbone.1.running_var'],
                       record.states[4]['backbone.1.running_var'])


def test_huge_input_with_a_gradscaler_overflow_restores_the_statistics_too(work_dir,
                                                                          monkeypatch):
    # with a scale of 2**120 the huge input's gradients overflow: the GradScaler skips the
    # step, and the BatchNorm variance the input sent to inf must not stay for the next one
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module
    from mmengine.optim import AmpOptimWrapper
    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    model = build_model()
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                              dtype='bfloat16')
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.0**120)
    runner = make_runner(work_dir, hook_cfg(policy='skip', max_consecutive_overflow=None),
                         model=model, optim_wrapper=wrapper, max_iters=8,
                         extra_hooks=(FaultInjectionHook({2: 'input_huge'}),))
    runner.train()
    finished_with_finite_checkpoints(runner, work_dir, 8)
    hook = sanitizer_of(runner)
    assert hook.counters['restored'] == hook.counters['amp_overflow'] == 1
    assert hook.counters['refused_checkpoints'] == 0
    report = read_report(work_dir)
    (event,), (overflow,) = report['events'], report['amp_overflows']
    assert (event['kind'], event['iter'], overflow['iter']) == ('buffer', 3, 3)


# ------------------------------------- 6. save_best unset: nothing to refuse after validation
def test_validation_without_save_best_refuses_nothing(work_dir):
    # warn applies the NaN update; each epoch-end save is refused once, validation adds none
    runner = make_runner(work_dir, hook_cfg(policy='warn'), max_epochs=2,
                         dataset=ToyDataset(40), checkpoint_interval=1, val=True,
                         extra_hooks=(FaultInjectionHook({3: 'grad_nan'}),))
    runner.train()
    assert runner.epoch == 2
    hook = sanitizer_of(runner)
    assert hook.counters['refused_checkpoints'] == 2
    refusals = [e for e in read_report(work_dir)['events'] if e['kind'] == 'checkpoint']
    assert [e['iter'] for e in refusals] == [10, 20]


def test_a_best_checkpoint_that_would_be_written_is_still_refused(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='warn'), max_epochs=2,
                         dataset=ToyDataset(40), checkpoint_interval=1, val=True,
                         save_best='validations',
                         extra_hooks=(FaultInjectionHook({3: 'grad_nan'}),))
    runner.train()
    # per epoch: the periodic save and the best save (a better score every time), both refused
    assert sanitizer_of(runner).counters['refused_checkpoints'] == 4
    assert not [p for p in checkpoints(work_dir) if 'best' in osp.basename(p)]


# --------------------------------------------- 7. a stop decided at the end of an epoch
def test_stop_at_epoch_end_completes_the_epoch_and_skips_validation(work_dir):
    validations = ValRecordHook()
    runner = make_runner(work_dir, hook_cfg(policy='skip'), max_epochs=3,
                         dataset=ToyDataset(40), checkpoint_interval=1, val=True,
                         extra_hooks=(FaultInjectionHook({15: 'param_nan_after_step'}),
                                      validations))
    runner.train()
    hook = sanitizer_of(runner)
    assert hook.stopped and hook.counters['refused_checkpoints'] == 1
    assert runner.epoch == 2 and runner.iter == 20  # epoch 2 ran to its end
    assert [v['epoch'] for v in validations.validations] == [1]  # none of the NaN model
    # the NaN weight makes the later gradients NaN (skipped); the epoch-end save is refused
    (refusal,) = [e for e in read_report(work_dir)['events'] if e['kind'] == 'checkpoint']
    assert (refusal['iter'], refusal['epoch'], refusal['action']) == (20, 2, 'refused')
    assert [osp.basename(p) for p in checkpoints(work_dir)] == ['epoch_1.pth']


@pytest.mark.parametrize('by_epoch', [False, True])
def test_refusal_names_the_last_iteration_in_both_loops(work_dir, by_epoch):
    loop = dict(max_epochs=1) if by_epoch else dict(max_iters=10)
    runner = make_runner(work_dir, hook_cfg(policy='warn'), dataset=ToyDataset(40),
                         checkpoint_interval=1 if by_epoch else 10, **loop,
                         extra_hooks=(FaultInjectionHook({4: 'param_nan_after_step'}),))
    runner.train()
    refusals = [e for e in read_report(work_dir)['events'] if e['kind'] == 'checkpoint']
    assert [(e['iter'], e['epoch']) for e in refusals] == [(10, 1)]
