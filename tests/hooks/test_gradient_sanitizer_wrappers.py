"""Real optim wrappers: zero change when finite, accumulation, clip_grad, OptimWrapperDict."""
import json
import os.path as osp

import pytest
import torch
from sanitizer_toys import (
    FaultInjectionHook,
    RecordHook,
    TwoOptimizerToyModel,
    all_finite,
    build_model,
    make_runner,
    model_state,
    sanitizer_of,
    two_optimizer_wrappers,
)

HOOK = dict(type='GradientSanitizerHook', policy='skip', check_params=True, localize=True)


def read_report(work_dir):
    with open(osp.join(work_dir, 'gradient_sanitizer_report.json')) as f:
        return json.load(f)


def optimizer_state(runner):
    state = runner.optim_wrapper.optimizer.state_dict()['state']
    return {(k, name): v for k, s in state.items() for name, v in s.items()}


OPTIM_CASES = {
    'sgd_momentum': dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
    'accumulate_3': dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
                         accumulative_counts=3),
    'clip_norm': dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
                      clip_grad=dict(max_norm=1.0)),
    'adamw_clip_value_accumulate_2': dict(optimizer=dict(type='AdamW', lr=0.01),
                                          clip_grad=dict(type='value', clip_value=0.5),
                                          accumulative_counts=2),
}


@pytest.mark.parametrize('case', sorted(OPTIM_CASES))
def test_finite_training_is_bit_identical_with_and_without_the_hook(tmp_path, case):
    finals = []
    for with_hook in (False, True):
        runner = make_runner(str(tmp_path / str(with_hook)), HOOK if with_hook else None,
                             max_iters=10, optim_wrapper=dict(OPTIM_CASES[case]))
        runner.train()
        finals.append((model_state(runner), optimizer_state(runner)))
        if with_hook:
            assert sanitizer_of(runner).counters['events'] == 0
    (state_a, optim_a), (state_b, optim_b) = finals
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert optim_a.keys() == optim_b.keys()
    for key in optim_a:
        assert torch.equal(torch.as_tensor(optim_a[key]), torch.as_tensor(optim_b[key])), key
    # the run did train (a test of "identical" that trains nothing would prove nothing)
    assert not torch.equal(state_a['head.weight'], build_model().state_dict()['head.weight'])


def test_accumulation_skips_the_whole_accumulated_update(work_dir):
    # window = 2 iterations; NaN gradient in the first micro-batch of window 2 (iters 3-4)
    record = RecordHook()
    runner = make_runner(work_dir, dict(type='GradientSanitizerHook', policy='skip'),
                         max_iters=8,
                         optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01),
                                            accumulative_counts=2),
                         extra_hooks=(FaultInjectionHook({2: 'grad_nan', 4: 'loss_nan'}),
                                      record))
    runner.train()
    hook = sanitizer_of(runner)
    assert hook.counters['skipped'] == 2 and all(record.finite_after_iter)
    # 4 updates due, 2 dropped: AdamW's step count shows only 2 were applied
    steps = {int(s['step']) for s in runner.optim_wrapper.optimizer.state.values()}
    assert steps == {2}
    events = read_report(work_dir)['events']
    assert [e['iter'] for e in events] == [4, 6]  # detected at the update (end of the window)
    first = events[0]['ranks'][0]
    assert [(s['img_path'], s['iter']) for s in first['batch']] == [
        (f'toy/sample_{i:03d}.png', 3 + i // 4 - 2) for i in range(8, 16)]
    assert events[1]['ranks'][0]['loss_terms'] == {'loss_aux@iter5': 'nan'}
    assert torch.equal(record.states[3]['head.weight'], record.states[1]['head.weight'])


def test_sanitize_happens_before_clip_grad(work_dir):
    """An Inf gradient entry makes clip_grad_norm_ scale every gradient by 0 (Inf * 0 = NaN):
    the audit must act before clipping."""
    clip = dict(optimizer=dict(type='SGD', lr=0.05), clip_grad=dict(max_norm=1.0))
    runner = make_runner(work_dir, None, max_iters=6, optim_wrapper=dict(clip),
                         extra_hooks=(FaultInjectionHook({3: 'grad_inf'}),))
    runner.train()
    assert not all_finite(model_state(runner))  # without the hook: poisoned

    sanitized_dir = work_dir + '_sanitized'
    runner = make_runner(sanitized_dir, dict(type='GradientSanitizerHook', policy='sanitize'),
                         max_iters=6, optim_wrapper=dict(clip),
                         extra_hooks=(FaultInjectionHook({3: 'grad_inf'}),))
    runner.train()
    assert all_finite(model_state(runner))
    grad_norms = runner.message_hub.get_scalar('train/grad_norm').data[0]
    assert len(grad_norms) == 6 and all(float(v) == float(v) and v < float('inf')
                                        for v in grad_norms)
    assert sanitizer_of(runner).counters['sanitized'] == 1


def test_optim_wrapper_dict_audits_each_wrapper(work_dir):
    torch.manual_seed(0)
    model = TwoOptimizerToyModel()
    record = RecordHook()
    runner = make_runner(work_dir, dict(type='GradientSanitizerHook', policy='skip'),
                         model=model, max_iters=6, optim_wrapper=two_optimizer_wrappers(model),
                         extra_hooks=(FaultInjectionHook({3: 'grad_nan'}, param='head.weight'),
                                      record))
    runner.train()
    assert runner.iter == 6 and all(record.finite_after_iter)
    event = read_report(work_dir)['first_event']
    assert (event['iter'], event['optim_wrapper'], event['action']) == (4, 'head', 'skipped')
    assert [t['name'] for t in event['ranks'][0]['nonfinite_tensors']] == ['head.weight']
    before, after = record.states[2], record.states[3]
    assert torch.equal(before['head.weight'], after['head.weight'])  # head update dropped
    assert not torch.equal(before['neck.0.weight'], after['neck.0.weight'])  # body applied


def test_parameter_schedulers_see_an_unmodified_step(tmp_path):
    """MMEngine's schedulers mark ``optim_wrapper.step`` with ``_with_counter`` and warn
    ("optimizer.step() has been overridden ...") when the mark is gone; the hook's
    replacement keeps it, and the scheduler still counts steps."""
    import warnings
    runner = make_runner(str(tmp_path), hook=dict(type='GradientSanitizerHook'), max_iters=3,
                         param_scheduler=dict(type='LinearLR', start_factor=0.5,
                                              by_epoch=False, begin=0, end=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        runner.train()
    assert not [w for w in caught if 'has been overridden' in str(w.message)]
