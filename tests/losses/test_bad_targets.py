"""Out-of-range and NaN targets are rejected by every public loss, function and module, with
the argument, the observed range and the likely cause in the message (issue: a mask in 0-255
pixels or -1/1 labels used to give a silent NaN or a meaningless finite loss)."""
import math

import pytest
import torch

import focal_plugin  # noqa: F401  (registers the modules)
from focal_plugin.functional import (
    asymmetric_focal_loss,
    focal_tversky_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
    unified_focal_loss,
    varifocal_loss,
)
from focal_plugin.functional import targets as target_check
from focal_plugin.losses import (
    StableAsymmetricFocalLoss,
    StableFocalLoss,
    StableFocalTverskyLoss,
    StableQualityFocalLoss,
    StableSoftmaxFocalLoss,
    StableVarifocalLoss,
    UnifiedFocalLoss,
)

torch.set_num_threads(1)

g = torch.Generator().manual_seed(0)
X = torch.randn(6, 4, generator=g)                     # (anchors, classes) logits
HARD = (torch.rand(6, 4, generator=g) > 0.6).float()   # valid 0/1 targets
SCORES = torch.rand(6, 4, generator=g)                 # valid soft targets in [0, 1)
SEG_X = torch.randn(2, 3, 5, 5, generator=g)           # (N, C, H, W) segmentation logits
SEG_T = torch.randint(0, 3, (2, 5, 5), generator=g)

# Mistakes users make with probability / score targets, and what the message must say.
PIXELS = ('0-255 pixels', HARD * 255, 'max 255')
TIMES_3 = ('x3', HARD * 3, 'max 3')
PLUS_MINUS = ('-1/1 labels', 2 * HARD - 1, 'min -1')
NEGATED = ('negated', -HARD, 'min -1')
NEGATIVE_IOU = ('scores below 0', -SCORES, 'min -')
NAN = ('NaN', torch.where(HARD > 0, torch.tensor(math.nan), SCORES), 'contain NaN')
SOFT_MISTAKES = [PIXELS, TIMES_3, PLUS_MINUS, NEGATED, NEGATIVE_IOU, NAN]

# name -> a call of one public loss on (logits, targets)
SOFT_TARGET_LOSSES = {
    'sigmoid_focal_loss exact': lambda t: sigmoid_focal_loss(X, t),
    'sigmoid_focal_loss gamma 0.5 exact': lambda t: sigmoid_focal_loss(X, t, gamma=0.5),
    'sigmoid_focal_loss epsilon': lambda t: sigmoid_focal_loss(X, t, stabilizer='epsilon'),
    'sigmoid_focal_loss none': lambda t: sigmoid_focal_loss(X, t, stabilizer='none'),
    'sigmoid_focal_loss activated': lambda t: sigmoid_focal_loss(X.sigmoid(), t,
                                                                 activated=True),
    'sigmoid_focal_loss float16': lambda t: sigmoid_focal_loss(X.half(), t.half()),
    'quality_focal_loss': lambda t: quality_focal_loss(X, t),
    'quality_focal_loss none': lambda t: quality_focal_loss(X, t, stabilizer='none'),
    'quality_focal_loss activated': lambda t: quality_focal_loss(X.sigmoid(), t,
                                                                 activated=True),
    'varifocal_loss': lambda t: varifocal_loss(X, t),
    'varifocal_loss epsilon': lambda t: varifocal_loss(X, t, stabilizer='epsilon'),
    'StableFocalLoss (same-shape targets)': lambda t: StableFocalLoss()(X, t),
    'StableFocalLoss none': lambda t: StableFocalLoss(stabilizer='none')(X, t),
    'StableQualityFocalLoss (dense scores)': lambda t: StableQualityFocalLoss()(X, t),
    'StableQualityFocalLoss (labels, scores)': lambda t: StableQualityFocalLoss()(
        X, (torch.arange(6) % 4, t[:, 0])),
    'StableVarifocalLoss': lambda t: StableVarifocalLoss()(X, t),
}


@pytest.mark.parametrize('loss', SOFT_TARGET_LOSSES.values(), ids=SOFT_TARGET_LOSSES.keys())
@pytest.mark.parametrize('mistake', SOFT_MISTAKES, ids=[m[0] for m in SOFT_MISTAKES])
def test_soft_target_losses_reject_out_of_range_and_nan_targets(loss, mistake):
    cause, targets, fragment = mistake
    with pytest.raises(ValueError, match='targets') as error:
        loss(targets)
    message = str(error.value)
    assert fragment in message
    if cause in ('0-255 pixels', '-1/1 labels'):
        assert cause in message  # the likely cause is named


def test_the_message_names_the_observed_range_and_the_cause():
    with pytest.raises(ValueError) as error:
        varifocal_loss(X, -SCORES)
    lo, hi = float(-SCORES.max()), float(-SCORES.min())
    assert f'got min {lo:g}, max {hi:g}' in str(error.value)
    assert 'clamp them to [0, 1]' in str(error.value)


@pytest.mark.parametrize('loss', SOFT_TARGET_LOSSES.values(), ids=SOFT_TARGET_LOSSES.keys())
@pytest.mark.parametrize('targets', [HARD, SCORES, torch.zeros(6, 4), torch.ones(6, 4)],
                         ids=['hard', 'soft', 'all 0', 'all 1'])
def test_the_closed_interval_is_accepted(loss, targets):
    assert torch.isfinite(loss(targets)).all()


def test_nan_logits_are_passed_on_for_the_hook_to_see():
    """The loss does not hide a NaN logit (an earlier failure): GradientSanitizerHook must
    see it in the loss and gradients and report where it came from."""
    x = X.clone().requires_grad_()
    with torch.no_grad():
        x[0, 0] = math.nan
    loss = sigmoid_focal_loss(x, HARD, reduction='sum')
    loss.backward()
    assert torch.isnan(loss) and torch.isnan(x.grad[0, 0])


# Losses over class indices: float targets are a TypeError, labels out of range a ValueError.
INDEX_CASES = [
    ('softmax_focal_loss, float targets', lambda: softmax_focal_loss(SEG_X, SEG_T.float()),
     TypeError, 'targets must be integer class indices .* or class probabilities'),
    ('softmax_focal_loss, label 3 of 3 classes', lambda: softmax_focal_loss(SEG_X, SEG_T + 1),
     ValueError, r'targets must be in \[0, 2\] \(class indices'),
    ('softmax_focal_loss, label -1', lambda: softmax_focal_loss(SEG_X, SEG_T - 1),
     ValueError, r'targets must be in \[0, 2\] \(class indices'),
    ('asymmetric_focal_loss, float targets', lambda: asymmetric_focal_loss(
        SEG_X, SEG_T.float()), TypeError, 'integer tensor of class indices'),
    ('focal_tversky_loss, label 3', lambda: focal_tversky_loss(SEG_X, SEG_T + 1),
     ValueError, r'targets must be in \[0, 2\] \(class indices'),
    ('unified_focal_loss, 0-255 mask', lambda: unified_focal_loss(SEG_X, SEG_T * 255),
     ValueError, r'targets must be in \[0, 2\] \(class indices'),
    ('unified_focal_loss, float targets', lambda: unified_focal_loss(SEG_X, SEG_T.float()),
     TypeError, 'integer tensor of class indices'),
    ('StableFocalLoss, label 5 of 4 classes (+ background)', lambda: StableFocalLoss()(
        X, torch.full((6,), 5)), ValueError, r'target labels must be in \[0, 4\]'),
    ('StableFocalLoss, integer targets 0/2', lambda: StableFocalLoss()(
        X, HARD.long() * 2), ValueError, 'hard labels 0 or 1'),
    ('StableSoftmaxFocalLoss, label 3', lambda: StableSoftmaxFocalLoss()(SEG_X, SEG_T + 1),
     ValueError, r'target must be in \[0, 2\] \(class indices'),
    ('UnifiedFocalLoss, float targets', lambda: UnifiedFocalLoss()(SEG_X, SEG_T.float()),
     TypeError, 'target must be an integer tensor of class indices'),
    ('StableAsymmetricFocalLoss, 0-255 mask', lambda: StableAsymmetricFocalLoss()(
        SEG_X, SEG_T * 255), ValueError, r'target must be in \[0, 2\] \(class indices'),
    ('StableFocalTverskyLoss, label -2', lambda: StableFocalTverskyLoss()(SEG_X, SEG_T - 2),
     ValueError, r'target must be in \[0, 2\] \(class indices'),
]


@pytest.mark.parametrize('call, error, fragment', [c[1:] for c in INDEX_CASES],
                         ids=[c[0] for c in INDEX_CASES])
def test_index_target_losses_reject_wrong_dtypes_and_labels(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


@pytest.fixture
def check_off():
    target_check.set_target_check(False)
    yield
    target_check.set_target_check(True)


def test_the_check_can_be_turned_off_for_production(check_off):
    assert not target_check.get_target_check()
    # off: no error, and the old (meaningless) behaviour comes back
    assert torch.isnan(sigmoid_focal_loss(X, HARD * 3, reduction='sum'))
    # the hard-label detection still works without the check
    hard = sigmoid_focal_loss(X, HARD, reduction='sum')
    assert torch.equal(hard, sigmoid_focal_loss(X, HARD.bool(), reduction='sum'))


def test_the_switch_takes_only_a_bool():
    with pytest.raises(TypeError, match='enabled must be a bool'):
        target_check.set_target_check('no')


def test_the_environment_variable_turns_it_off(monkeypatch):
    import importlib
    monkeypatch.setenv('FOCAL_PLUGIN_CHECK_TARGETS', '0')
    try:
        assert not importlib.reload(target_check).get_target_check()
    finally:
        monkeypatch.delenv('FOCAL_PLUGIN_CHECK_TARGETS')
        assert importlib.reload(target_check).get_target_check()
