"""AmpOptimWrapper on CPU (bfloat16 autocast) with a real GradScaler.

``AmpOptimWrapper.__init__`` asserts that a GPU exists, although its CPU path works
(``mmengine.runner.amp.autocast`` picks ``torch.autocast('cpu', bfloat16)``). The tests lift
only that assertion (``is_cuda_available`` inside the wrapper's module); the wrapper, autocast
and GradScaler are the real ones. On a CPU-only host mmengine's default scaler
(``torch.cuda.amp.GradScaler``) disables itself, so the overflow tests install the real CPU
GradScaler, ``torch.amp.GradScaler('cpu')``.
"""
import json
import os.path as osp
import warnings

import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module
import pytest
import torch
from mmengine.optim import AmpOptimWrapper
from sanitizer_toys import (
    FaultInjectionHook,
    RecordHook,
    all_finite,
    build_model,
    make_runner,
    model_state,
    sanitizer_of,
)

from focal_plugin.hooks import NonFiniteTrainingError


def bf16_autocast_works() -> bool:
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.bfloat16
    except RuntimeError:
        return False


pytestmark = pytest.mark.skipif(not bf16_autocast_works(),
                                reason='no bfloat16 autocast on this CPU')


@pytest.fixture
def amp_wrapper(monkeypatch):
    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)

    def build(model, scaler=None):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch.cuda.amp.GradScaler deprecation/disable
            wrapper = AmpOptimWrapper(
                optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                dtype='bfloat16')
        if scaler is not None:
            wrapper.loss_scaler = scaler
        return wrapper
    return build


def read_report(work_dir):
    with open(osp.join(work_dir, 'gradient_sanitizer_report.json')) as f:
        return json.load(f)


def test_bf16_autocast_nonfinite_gradients_are_divergence_without_a_scaler(work_dir,
                                                                           amp_wrapper):
    model = build_model()
    wrapper = amp_wrapper(model)
    assert not wrapper.loss_scaler.is_enabled()  # what mmengine builds on a CPU-only host
    record = RecordHook()
    runner = make_runner(work_dir, dict(type='GradientSanitizerHook', policy='skip'),
                         model=model, optim_wrapper=wrapper, max_iters=8,
                         extra_hooks=(FaultInjectionHook({3: 'grad_nan'}), record))
    runner.train()
    assert model.last_output_dtype == torch.bfloat16  # autocast really was on
    hook = sanitizer_of(runner)
    assert (hook.counters['skipped'], hook.counters['amp_overflow']) == (1, 0)
    assert all(record.finite_after_iter)


def test_gradscaler_overflow_is_counted_apart_and_never_as_divergence(work_dir, amp_wrapper):
    # a huge initial scale overflows for real until the GradScaler has backed off enough
    model = build_model()
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0**127, growth_interval=10000)
    wrapper = amp_wrapper(model, scaler)
    record = RecordHook()
    runner = make_runner(work_dir, dict(type='GradientSanitizerHook', policy='raise'),
                         model=model, optim_wrapper=wrapper, max_iters=12,
                         extra_hooks=(record,))
    runner.train()  # policy 'raise', yet no error: overflows are not divergence
    hook = sanitizer_of(runner)
    scales = [2.0**127] + record.scales
    backoff_iters = [i + 1 for i, (earlier, later) in enumerate(zip(scales, scales[1:]))
                     if later < earlier]  # 1-based iterations whose update the scaler skipped
    backoffs = len(backoff_iters)
    assert backoffs >= 1
    assert hook.counters['amp_overflow'] == backoffs
    assert hook.counters['events'] == hook.counters['skipped'] == 0
    assert all(record.finite_after_iter) and runner.iter == 12
    assert record.logged_counters[-1]['train/amp_overflow'] == backoffs
    overflows = read_report(work_dir)['amp_overflows']
    assert [o['iter'] for o in overflows] == backoff_iters
    assert overflows[0]['loss_scale'] == 2.0**127


def test_persistent_overflow_is_escalated_through_the_policy(work_dir, amp_wrapper):
    model = build_model()
    wrapper = amp_wrapper(model, torch.amp.GradScaler('cpu', init_scale=2.0**16))
    faults = {i: 'grad_inf' for i in range(2, 12)}  # Inf in every update, loss finite
    runner = make_runner(work_dir, dict(type='GradientSanitizerHook', policy='raise',
                                        max_consecutive_overflow=3),
                         model=model, optim_wrapper=wrapper, max_iters=12,
                         extra_hooks=(FaultInjectionHook(faults),))
    with pytest.raises(NonFiniteTrainingError, match='AMP overflow in 4 consecutive'):
        runner.train()
    assert sanitizer_of(runner).counters['amp_overflow'] == 3
    assert runner.iter == 5  # raised at the 4th overflow in a row (iteration 6, 0-based 5)
    assert all_finite(model_state(runner))
