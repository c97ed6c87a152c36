"""The sanitizer's rule on its own: no torch, no Runner, just verdicts in and decisions out."""
import doctest

import pytest

from focal_plugin.hooks import policy as policy_module
from focal_plugin.hooks.policy import Action, EventKind, Policy, SanitizerPolicy

GRAD = dict(grads_bad=True, loss_bad=False)


def test_docstring_example_runs():
    assert doctest.testmod(policy_module).failed == 0


@pytest.mark.parametrize('policy, action', [
    (Policy.WARN, Action.WARNED), (Policy.SKIP, Action.SKIPPED),
    (Policy.SANITIZE, Action.SANITIZED), (Policy.STOP, Action.STOPPED),
    (Policy.RAISE, Action.RAISED)])
def test_each_policy_maps_to_its_action_and_counts_it(policy, action):
    rule = SanitizerPolicy(policy)
    decision = rule.on_nonfinite_update(**GRAD)
    assert decision.action is action and not decision.escalated and decision.reason is None
    assert rule.counters['events'] == 1
    counted = {'warned', 'skipped', 'sanitized'}
    for key in counted:
        assert rule.counters[key] == (1 if key == action.value else 0)
    assert rule.take_pending() is (action if action.ends_training else None)
    assert rule.take_pending() is None  # taken once
    assert rule.stop_decided is (action is Action.STOPPED)


@pytest.mark.parametrize('escalate_to, final', [(Policy.STOP, Action.STOPPED),
                                                (Policy.RAISE, Action.RAISED)])
def test_escalation_after_max_consecutive(escalate_to, final):
    rule = SanitizerPolicy(Policy.SANITIZE, max_consecutive=3, escalate_to=escalate_to)
    actions = [rule.on_nonfinite_update(**GRAD) for _ in range(4)]
    assert [d.action for d in actions] == [Action.SANITIZED] * 3 + [final]
    assert actions[-1].escalated and 'max_consecutive=3' in actions[-1].reason
    assert rule.counters['escalations'] == 1 and rule.counters['sanitized'] == 3


def test_a_clean_update_resets_the_run_but_not_the_totals():
    rule = SanitizerPolicy(Policy.SKIP, max_consecutive=2)
    for _ in range(2):
        rule.on_nonfinite_update(**GRAD)
        rule.end_of_audited_update(had_event=True)
    rule.end_of_audited_update(had_event=False)
    assert rule.consecutive == 0
    assert rule.on_nonfinite_update(**GRAD).action is Action.SKIPPED  # not escalated
    assert rule.counters['skipped'] == 3


def test_never_escalates_with_max_consecutive_none():
    rule = SanitizerPolicy(Policy.SKIP, max_consecutive=None)
    assert {rule.on_nonfinite_update(**GRAD).action for _ in range(500)} == {Action.SKIPPED}


def test_amp_overflow_is_left_to_the_scaler_until_the_limit():
    rule = SanitizerPolicy(Policy.SKIP, max_consecutive_overflow=2)
    decisions = [rule.on_nonfinite_update(True, False, scaler_enabled=True) for _ in range(3)]
    assert [d.action for d in decisions] == [None, None, Action.SKIPPED]
    assert 'max_consecutive_overflow=2' in decisions[-1].reason
    assert rule.counters['amp_overflow'] == 2 and rule.counters['events'] == 1
    # a NaN loss under AMP is divergence at once; so are bad grads without a scaler
    assert SanitizerPolicy(Policy.SKIP).on_nonfinite_update(True, True, True).action \
        is Action.SKIPPED
    assert SanitizerPolicy(Policy.SKIP).on_nonfinite_update(True, False, False).action \
        is Action.SKIPPED


def test_overflow_run_ends_with_an_update_without_overflow():
    rule = SanitizerPolicy(Policy.SKIP, max_consecutive_overflow=1)
    rule.on_nonfinite_update(True, False, scaler_enabled=True)
    rule.end_of_audited_update(had_event=False)
    assert rule.consecutive_overflow == 1  # this update overflowed: the run goes on
    rule.end_of_audited_update(had_event=False)
    assert rule.consecutive_overflow == 0
    assert rule.on_nonfinite_update(True, False, scaler_enabled=True).action is None


@pytest.mark.parametrize('policy, escalate_to, action', [
    (Policy.WARN, Policy.STOP, Action.WARNED), (Policy.SKIP, Policy.STOP, Action.STOPPED),
    (Policy.SKIP, Policy.RAISE, Action.RAISED), (Policy.SANITIZE, Policy.RAISE, Action.RAISED),
    (Policy.STOP, Policy.RAISE, Action.STOPPED), (Policy.RAISE, Policy.STOP, Action.RAISED)])
def test_corrupt_weights_cannot_be_skipped(policy, escalate_to, action):
    rule = SanitizerPolicy(policy, escalate_to=escalate_to)
    assert rule.on_corrupt_state() is action
    assert rule.counters['events'] == 1
    assert rule.take_pending() is (action if action.ends_training else None)


def test_refused_checkpoint_counts_and_says_what_follows():
    rule = SanitizerPolicy(Policy.SKIP)
    assert rule.on_refused_checkpoint() is Action.STOPPED
    assert (rule.counters['events'], rule.counters['refused_checkpoints']) == (1, 1)
    assert rule.stop_decided and rule.take_pending() is None  # carried out by the caller
    warn = SanitizerPolicy(Policy.WARN)
    assert warn.on_refused_checkpoint() is Action.WARNED and not warn.stop_decided


def test_state_round_trip():
    rule = SanitizerPolicy(Policy.SKIP, max_consecutive=5)
    for _ in range(3):
        rule.on_nonfinite_update(**GRAD)
    restored = SanitizerPolicy(Policy.SKIP, max_consecutive=5)
    restored.load_state_dict(rule.state_dict())
    assert restored.counters == rule.counters and restored.consecutive == 3
    assert [restored.on_nonfinite_update(**GRAD).action for _ in range(3)] == \
        [Action.SKIPPED, Action.SKIPPED, Action.STOPPED]


def test_enums_are_the_report_vocabulary():
    assert [p.value for p in Policy] == ['warn', 'skip', 'sanitize', 'stop', 'raise']
    assert {a.value for a in Action if a.is_serious} == {'stopped', 'raised', 'refused'}
    assert {k.value for k in EventKind if k.concerns_update} == {'gradient', 'loss'}
    with pytest.raises(ValueError, match="escalate_to must be one of \\('stop', 'raise'\\)"):
        Policy.parse('skip', 'escalate_to', (Policy.STOP, Policy.RAISE))
    with pytest.raises(ValueError, match='policy must be one of'):
        Policy.parse('ignore', 'policy')
