"""Fault injection through a real Runner: every policy, every kind of fault."""
import json
import os.path as osp

import pytest
import torch
from sanitizer_toys import (
    FaultInjectionHook,
    RecordHook,
    all_finite,
    checkpoint_is_finite,
    checkpoints,
    make_runner,
    model_state,
    sanitizer_of,
)

from focal_plugin.hooks import NonFiniteCheckpointError, NonFiniteTrainingError

REPORT = 'gradient_sanitizer_report.json'


def read_report(work_dir):
    with open(osp.join(work_dir, REPORT)) as f:
        return json.load(f)


def hook_cfg(**kwargs):
    return dict(type='GradientSanitizerHook', **kwargs)


def equal_states(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 0-based iteration -> fault; batch_size 4, no shuffle: iteration k sees samples 4k..4k+3
FAULTS = {2: 'grad_nan', 5: 'grad_inf', 7: 'loss_nan', 9: 'loss_inf', 10: 'loss_detached_nan'}


def test_skip_detects_every_fault_and_keeps_training_finite(work_dir):
    injector, record = FaultInjectionHook(FAULTS), RecordHook()
    runner = make_runner(work_dir, hook_cfg(policy='skip'), max_iters=14,
                         extra_hooks=(injector, record))
    runner.train()

    assert runner.iter == 14  # training completed
    assert sorted(i for i, _ in injector.injected) == sorted(FAULTS)
    hook = sanitizer_of(runner)
    assert hook.counters['events'] == hook.counters['skipped'] == len(FAULTS)
    assert all(record.finite_after_iter)
    assert all(checkpoint_is_finite(p) for p in checkpoints(work_dir))

    report = read_report(work_dir)
    assert report['status'] == 'finished'
    events = {e['iter'] - 1: e for e in report['events']}
    assert sorted(events) == sorted(FAULTS)  # detected at the iteration of injection
    for it, event in events.items():
        assert event['action'] == 'skipped'
        rank0 = event['ranks'][0]
        paths = [s['img_path'] for s in rank0['batch']]
        assert paths == [f'toy/sample_{4 * it + j:03d}.png' for j in range(4)]

    grad_nan, grad_inf = events[2]['ranks'][0], events[5]['ranks'][0]
    assert [(t['name'], t['module'], t['nan'], t['posinf']) for t in
            grad_nan['nonfinite_tensors']] == [('neck.0.weight', 'neck.0', 3, 0)]
    assert [(t['name'], t['nan'], t['posinf']) for t in
            grad_inf['nonfinite_tensors']] == [('neck.0.weight', 0, 3)]
    assert grad_nan['grad_norm_per_module']['neck']['norm'] == 'nan'
    assert isinstance(grad_nan['grad_norm_per_module']['backbone']['norm'], float)
    assert events[2]['kind'] == 'gradient' and grad_nan['loss_terms'] == {}
    assert events[7]['ranks'][0]['loss_terms'] == {'loss_aux': 'nan'}
    assert events[9]['ranks'][0]['loss_terms'] == {'loss_aux': 'inf'}
    # a NaN loss term outside the graph: gradients finite, still caught through the loss
    assert events[10]['kind'] == 'loss'
    assert events[10]['ranks'][0]['nonfinite_tensors'] == []
    assert events[10]['ranks'][0]['loss_terms'] == {'loss_detached': 'nan'}

    # a skipped update changes nothing: weights, BN statistics and momentum stay as they were
    for it in FAULTS:
        assert equal_states(record.states[it], record.states[it - 1])
        assert all(torch.equal(a, b) for a, b in zip(record.momenta[it], record.momenta[it - 1]))
    assert not equal_states(record.states[1], record.states[0])  # normal updates do change

    # counters reach the MessageHub (and so the log lines)
    assert record.logged_counters[-1]['train/nonfinite_skipped'] == len(FAULTS)
    assert record.logged_counters[1] == {}  # nothing pushed before the first event


def test_without_the_hook_the_same_faults_poison_weights_and_checkpoints(work_dir):
    record = RecordHook()
    runner = make_runner(work_dir, None, max_iters=8, extra_hooks=(FaultInjectionHook(FAULTS),
                                                                    record))
    runner.train()
    assert record.finite_after_iter[:3] == [True, True, False]
    assert not all_finite(model_state(runner))
    assert not checkpoint_is_finite(osp.join(work_dir, 'iter_8.pth'))


def test_raise_names_parameter_module_and_iteration(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='raise'), max_iters=10,
                         extra_hooks=(FaultInjectionHook({4: 'grad_nan'}),))
    with pytest.raises(NonFiniteTrainingError) as info:
        runner.train()
    message = str(info.value)
    assert 'at iter 5' in message
    assert 'neck.0.weight' in message and '[module neck.0]' in message and 'NaN=3' in message
    assert 'NOT applied' in message
    assert all_finite(model_state(runner))  # the offending update never reached the weights
    assert read_report(work_dir)['status'] == 'raised'
    assert [osp.basename(p) for p in checkpoints(work_dir)] == ['iter_4.pth']


def test_stop_saves_the_last_good_state_and_no_nan_checkpoint(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='stop'), max_iters=12, checkpoint_interval=2,
                         extra_hooks=(FaultInjectionHook({5: 'loss_nan'}),))
    runner.train()
    assert runner.iter == 6  # stopped right after the faulty iteration
    last_good = osp.join(work_dir, 'last_good_iter_6.pth')
    assert osp.isfile(last_good)
    assert all(checkpoint_is_finite(p) for p in checkpoints(work_dir))
    saved = torch.load(last_good, map_location='cpu', weights_only=False)
    assert equal_states(saved['state_dict'], model_state(runner))
    assert saved['gradient_sanitizer']['counters']['events'] == 1
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        # `resume=True` continues from the last good state (CheckpointHook, due at iter 6 too,
        # ran after the stop and saved the same state under its own name)
        pointed = f.read()
    assert pointed in (last_good, osp.join(work_dir, 'iter_6.pth'))
    assert equal_states(torch.load(pointed, map_location='cpu', weights_only=False)['state_dict'],
                        saved['state_dict'])
    report = read_report(work_dir)
    assert report['status'] == 'stopped' and report['last_good_checkpoint'] == pointed
    assert report['first_event']['action'] == 'stopped'


def test_sanitize_zeroes_only_the_nonfinite_entries(work_dir):
    record = RecordHook()
    runner = make_runner(work_dir, hook_cfg(policy='sanitize'), max_iters=6,
                         optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05)),
                         extra_hooks=(FaultInjectionHook({3: 'grad_nan'}), record))
    runner.train()
    hook = sanitizer_of(runner)
    assert hook.counters['sanitized'] == hook.counters['events'] == 1
    assert read_report(work_dir)['first_event']['sanitized_entries'] == 3
    assert all(record.finite_after_iter)
    before, after = (record.states[i]['neck.0.weight'].view(-1) for i in (2, 3))
    assert torch.equal(after[:3], before[:3])  # the 3 NaN entries got a zero gradient
    assert not torch.equal(after[3:], before[3:])  # the rest of the update was applied


def test_consecutive_events_escalate_to_stop(work_dir):
    faults = {3: 'loss_nan', 4: 'loss_nan', 5: 'loss_nan', 6: 'loss_nan'}
    runner = make_runner(work_dir, hook_cfg(policy='skip', max_consecutive=2), max_iters=12,
                         checkpoint_interval=100, extra_hooks=(FaultInjectionHook(faults),))
    runner.train()
    hook = sanitizer_of(runner)
    assert runner.iter == 6  # iters 4, 5 skipped; the 3rd in a row escalates at iter 6
    assert (hook.counters['skipped'], hook.counters['escalations']) == (2, 1)
    report = read_report(work_dir)
    assert [e['action'] for e in report['events']] == ['skipped', 'skipped', 'stopped']
    assert 'max_consecutive=2' in report['events'][-1]['reason']
    last_good = osp.join(work_dir, 'last_good_iter_6.pth')
    assert checkpoints(work_dir) == [last_good] and checkpoint_is_finite(last_good)


def test_consecutive_events_escalate_to_raise(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='sanitize', max_consecutive=1,
                                            escalate_to='raise'),
                         max_iters=12, extra_hooks=(FaultInjectionHook({3: 'loss_nan',
                                                                        4: 'loss_nan'}),))
    with pytest.raises(NonFiniteTrainingError, match='max_consecutive=1'):
        runner.train()
    assert sanitizer_of(runner).counters['sanitized'] == 1
    assert all_finite(model_state(runner))


def test_nan_written_into_the_weights_is_never_checkpointed(work_dir):
    # a weight set to NaN (not via an update): every later update is non-finite, and the
    # CheckpointHook save due at iter 4 is refused, which ends the run (policy skip)
    runner = make_runner(work_dir, hook_cfg(policy='skip'), max_iters=12, checkpoint_interval=2,
                         extra_hooks=(FaultInjectionHook({3: 'param_nan'}),))
    runner.train()
    report = read_report(work_dir)
    assert [(e['iter'], e['kind'], e['action']) for e in report['events']] == [
        (4, 'gradient', 'skipped'), (4, 'checkpoint', 'refused')]
    assert report['events'][1]['ranks'][0]['nonfinite_tensors'][0]['name'] == 'neck.0.weight'
    assert runner.iter == 4 and report['status'] == 'stopped'
    assert [osp.basename(p) for p in checkpoints(work_dir)] == ['iter_2.pth']
    assert checkpoint_is_finite(osp.join(work_dir, 'iter_2.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read() == osp.join(work_dir, 'iter_2.pth')
    assert report['last_good_checkpoint'] == osp.join(work_dir, 'iter_2.pth')


def test_a_refused_save_deletes_no_good_checkpoint(work_dir):
    # max_keep_ckpts=1: CheckpointHook deletes iter_2.pth *before* Runner.save_checkpoint (and
    # so before the public before_save_checkpoint stage) when it saves iter_4.pth; the guard
    # refuses ahead of that, so the last good checkpoint survives
    runner = make_runner(work_dir, hook_cfg(policy='skip'), max_iters=12, checkpoint_interval=2,
                         max_keep_ckpts=1, extra_hooks=(FaultInjectionHook({3: 'param_nan'}),))
    runner.train()
    assert [osp.basename(p) for p in checkpoints(work_dir)] == ['iter_2.pth']
    assert checkpoint_is_finite(osp.join(work_dir, 'iter_2.pth'))
    assert read_report(work_dir)['last_good_checkpoint'] == osp.join(work_dir, 'iter_2.pth')


def test_check_params_catches_corruption_that_bypasses_gradients(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='skip', check_params=True), max_iters=12,
                         checkpoint_interval=3,
                         extra_hooks=(FaultInjectionHook({5: 'param_nan_after_step'}),))
    runner.train()
    hook = sanitizer_of(runner)
    report = read_report(work_dir)
    kinds = [(e['iter'], e['kind'], e['action']) for e in report['events']]
    assert kinds[0] == (6, 'parameter', 'stopped')
    assert report['events'][0]['ranks'][0]['nonfinite_tensors'][0]['name'] == 'neck.0.weight'
    # CheckpointHook wanted iter_6.pth: refused before it touched last_checkpoint
    assert kinds[1] == (6, 'checkpoint', 'refused')
    assert hook.counters['refused_checkpoints'] == 1
    assert [osp.basename(p) for p in checkpoints(work_dir)] == ['iter_3.pth']
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read() == osp.join(work_dir, 'iter_3.pth')
    assert runner.iter == 6


def test_warn_keeps_training_but_refuses_nan_checkpoints(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='warn'), max_iters=8,
                         extra_hooks=(FaultInjectionHook({2: 'grad_nan'}),))
    runner.train()
    hook = sanitizer_of(runner)
    assert runner.iter == 8
    # the NaN update was applied (warn), so every later update is non-finite too
    assert hook.counters['warned'] == 6
    assert hook.counters['refused_checkpoints'] == 2  # iter_4 and iter_8
    assert checkpoints(work_dir) == []
    assert not osp.exists(osp.join(work_dir, 'last_checkpoint'))


def test_interval_audits_only_due_iterations(work_dir):
    # detached NaN loss: harmless to the weights, visible only to an audit
    runner = make_runner(work_dir, hook_cfg(policy='skip', interval=3), max_iters=9,
                         extra_hooks=(FaultInjectionHook({1: 'loss_detached_nan',
                                                          5: 'loss_detached_nan'}),))
    runner.train()
    report = read_report(work_dir)
    assert [e['iter'] for e in report['events']] == [6]  # iteration 2 was not audited


def test_stop_ends_an_epoch_based_run_mid_epoch(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='stop'), max_epochs=3,
                         extra_hooks=(FaultInjectionHook({5: 'grad_nan'}),))
    runner.train()
    assert runner.iter == 5 and runner.epoch == 0  # 16 iterations per epoch: stopped in epoch 1
    assert osp.isfile(osp.join(work_dir, 'last_good_iter_6.pth'))
    assert not osp.exists(osp.join(work_dir, 'epoch_1.pth'))
    assert read_report(work_dir)['status'] == 'stopped'


def test_a_direct_save_of_nan_weights_is_refused_too(work_dir):
    """Saves that bypass CheckpointHook (user code, other hooks) meet before_save_checkpoint."""
    runner = make_runner(work_dir, hook_cfg(policy='skip'), max_iters=2)
    runner.train()
    model = runner.model
    with torch.no_grad():
        model.head.bias.fill_(float('inf'))
    with pytest.raises(NonFiniteCheckpointError, match=r'head\.bias'):
        runner.save_checkpoint(work_dir, 'manual.pth')
    assert not osp.exists(osp.join(work_dir, 'manual.pth'))
    with torch.no_grad():
        model.head.bias.zero_()
    runner.save_checkpoint(work_dir, 'manual.pth')  # finite again: saved, with the counters
    saved = torch.load(osp.join(work_dir, 'manual.pth'), map_location='cpu', weights_only=False)
    assert saved['gradient_sanitizer']['counters']['events'] == 0


def test_stop_with_nan_already_in_the_weights_writes_no_last_good_file(work_dir):
    runner = make_runner(work_dir, hook_cfg(policy='stop'), max_iters=12, checkpoint_interval=2,
                         extra_hooks=(FaultInjectionHook({2: 'param_nan'}),))
    runner.train()  # no NonFiniteCheckpointError: the stop itself checks the weights first
    assert runner.iter == 3
    assert [osp.basename(p) for p in checkpoints(work_dir)] == ['iter_2.pth']
    report = read_report(work_dir)
    assert report['status'] == 'stopped'
    assert report['last_good_checkpoint'] == osp.join(work_dir, 'iter_2.pth')
