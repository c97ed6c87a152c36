"""Construction: bad arguments fail in __init__ with the argument's name; config build works."""
import pytest
from mmengine.registry import HOOKS

import focal_plugin  # noqa: F401
from focal_plugin.hooks import GradientSanitizerHook


@pytest.mark.parametrize('kwargs, error, name', [
    (dict(policy='ignore'), ValueError, 'policy'),
    (dict(policy=None), ValueError, 'policy'),
    (dict(interval=0), ValueError, 'interval'),
    (dict(interval=1.5), TypeError, 'interval'),
    (dict(interval=True), TypeError, 'interval'),
    (dict(max_consecutive=0), ValueError, 'max_consecutive'),
    (dict(max_consecutive='3'), TypeError, 'max_consecutive'),
    (dict(escalate_to='skip'), ValueError, 'escalate_to'),
    (dict(check_loss='yes'), TypeError, 'check_loss'),
    (dict(check_params=2), TypeError, 'check_params'),
    (dict(localize=None), TypeError, 'localize'),
    (dict(max_consecutive_overflow=0), ValueError, 'max_consecutive_overflow'),
    (dict(report_file=''), TypeError, 'report_file'),
    (dict(max_reported_events=0), ValueError, 'max_reported_events'),
    (dict(polcy='skip'), TypeError, 'polcy'),  # unknown option
])
def test_bad_arguments_name_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        GradientSanitizerHook(**kwargs)


def test_bad_arguments_fail_when_built_from_a_config():
    with pytest.raises(ValueError, match='policy'):
        HOOKS.build(dict(type='GradientSanitizerHook', policy='ignore'))
    with pytest.raises(TypeError, match='unknown_option'):
        HOOKS.build(dict(type='GradientSanitizerHook', unknown_option=1))


def test_registered_in_root_hooks_and_built_from_config():
    hook = HOOKS.build(dict(type='GradientSanitizerHook', policy='sanitize', interval=3,
                            max_consecutive=None))
    assert isinstance(hook, GradientSanitizerHook)
    options = hook.options
    assert (hook.policy, options.interval, options.max_consecutive) == ('sanitize', 3, None)
    # found from a downstream scope too (mmdet configs use default_scope='mmdet')
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        assert HOOKS.build(dict(type='GradientSanitizerHook')).policy == 'skip'
