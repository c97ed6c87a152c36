"""Every argument of every public entry point x every kind of bad value that applies (issue 29).

The cases are generated from the entry points' signatures: each parameter must have a kind
in ``KINDS`` (or a per-entry override), so a new argument cannot be added without being
covered here (``test_every_argument_has_a_rule`` fails and names it). Each bad value must be
refused with the right exception class and a message naming the argument: never a silent
value, never a Python- or torch-internal message.
"""
from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

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
from focal_plugin.hooks import GradientSanitizerHook
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
NAN, INF = math.nan, math.inf

g = torch.Generator().manual_seed(0)
DET_X = torch.randn(6, 3, generator=g)                       # (anchors, classes) logits
LABELS = torch.tensor([0, 1, 2, 3, 3, 1])                    # 3 = background
ONEHOT = (LABELS[:, None] == torch.arange(3)).float()
SCORES = torch.rand(6, 3, generator=g) * ONEHOT              # IoU-aware scores
SEG_X = torch.randn(2, 3, 4, 4, generator=g)                 # (N, C, H, W)
SEG_T = torch.randint(0, 3, (2, 4, 4), generator=g)

# (label, bad value, expected exception) per kind of argument
R = [('str', '0.5', TypeError), ('bool', True, TypeError), ('None', None, TypeError),
     ('nan', NAN, ValueError), ('inf', INF, ValueError), ('-inf', -INF, ValueError)]
BAD: Dict[str, list] = {
    'exponent': R + [('negative', -1.0, ValueError)],
    'probability': R + [('negative', -0.1, ValueError), ('above 1', 1.5, ValueError)],
    'alpha': R[:2] + R[3:] + [('negative', -0.5, ValueError), ('above 1', 1.5, ValueError)],
    'non_negative': R + [('negative', -1.0, ValueError)],
    'positive': R + [('negative', -1.0, ValueError), ('zero', 0.0, ValueError)],
    'loss_weight': R,
    'choice': [('unknown', 'magic', ValueError), ('None', None, ValueError),
               ('int', 3, ValueError)],
    'flag': [('str', 'False', TypeError), ('None', None, TypeError), ('int 2', 2, TypeError),
             ('float', 0.5, TypeError)],
    'count': [('str', '1', TypeError), ('bool', True, TypeError), ('float', 1.5, TypeError),
              ('zero', 0, ValueError), ('negative', -1, ValueError), ('None', None, TypeError)],
    'count_or_none': [('str', '1', TypeError), ('bool', True, TypeError),
                      ('float', 1.5, TypeError), ('zero', 0, ValueError)],
    'ignore_index': [('str', '255', TypeError), ('None', None, TypeError),
                     ('float', 2.5, TypeError), ('bool', True, TypeError)],
    'class_vector': [('str', 'x', TypeError), ('nan', [1.0, NAN, 1.0], ValueError),
                     ('inf', [1.0, INF, 1.0], ValueError),
                     ('negative', [1.0, -1.0, 1.0], ValueError),
                     ('wrong length', [1.0, 1.0], ValueError), ('bool', True, TypeError)],
    'weight_tensor': [('list', [1.0] * 6, TypeError),
                      ('nan', torch.tensor([1.0, NAN, 1, 1, 1, 1]), ValueError),
                      ('inf', torch.tensor([1.0, INF, 1, 1, 1, 1]), ValueError),
                      ('negative', torch.tensor([1.0, -1, 1, 1, 1, 1]), ValueError),
                      ('negative int', torch.tensor([1, -1, 1, 1, 1, 1]), ValueError),
                      ('wrong shape', torch.ones(7), ValueError)],
    'avg_factor': [('str', '4', TypeError), ('bool', True, TypeError),
                   ('nan', NAN, ValueError), ('inf', INF, ValueError),
                   ('negative', -1.0, ValueError), ('nan tensor', torch.tensor(NAN), ValueError),
                   ('negative tensor', torch.tensor(-2.0), ValueError),
                   ('two elements', torch.ones(2), TypeError)],
    'reduction_override': [('unknown', 'magic', ValueError), ('int', 3, ValueError)],
    'use_sigmoid': [('False', False, ValueError), ('str', 'yes', ValueError)],
    'logits': [('int tensor', torch.zeros(6, 3, dtype=torch.long), TypeError),
               ('list', [[0.0] * 3] * 6, TypeError)],
    'report_file': [('int', 3, TypeError), ('empty', '', TypeError)],
    'policy': [('unknown', 'magic', ValueError), ('None', None, ValueError)],
    'loss_name': [('int', 3, TypeError), ('no loss_ prefix', 'ufl', ValueError),
                  ('prefix elsewhere', 'my_loss', ValueError)],
}
# None is the default (a value chosen by the module) where these kinds apply
BAD['probability_or_none'] = [c for c in BAD['probability'] if c[0] != 'None']
BAD['ignore_index_or_none'] = [c for c in BAD['ignore_index'] if c[0] != 'None']
# the region losses are normalised per pixel and per image and class: no avg_factor at all
BAD['no_avg_factor'] = [('number', 3.0, TypeError), ('tensor', torch.tensor(3.0), TypeError)]
# the kind of each parameter name; per-entry overrides below
KINDS = {
    'gamma': 'exponent', 'beta': 'exponent', 'alpha': 'alpha', 'delta': 'probability',
    'label_smoothing': 'probability', 'eps': 'non_negative', 'smooth': 'positive',
    'loss_weight': 'loss_weight', 'reduction': 'choice', 'stabilizer': 'choice',
    'variant': 'choice', 'activated': 'flag', 'iou_weighted': 'flag',
    'ignore_index': 'ignore_index', 'class_weight': 'class_vector', 'weight': 'weight_tensor',
    'avg_factor': 'avg_factor', 'reduction_override': 'reduction_override',
    'use_sigmoid': 'use_sigmoid', 'inputs': 'logits', 'pred': 'logits',
    'targets': 'targets', 'target': 'targets',
    'policy': 'policy', 'escalate_to': 'policy', 'interval': 'count',
    'max_reported_events': 'count', 'max_listed': 'count',
    'max_consecutive': 'count_or_none', 'max_consecutive_overflow': 'count_or_none',
    'check_loss': 'flag', 'check_params': 'flag', 'localize': 'flag',
    'protect_checkpoints': 'flag', 'report_file': 'report_file',
    'loss_name': 'loss_name', 'use_mask': 'flag', 'avg_non_ignore': 'flag',
    'pixel_weight': 'seg_weight', 'tversky_weight': 'probability_or_none',
}
SEG_TARGETS = [('bool', SEG_T > 0, TypeError), ('float', SEG_T.float(), TypeError),
               ('above C - 1', SEG_T + 1, ValueError), ('negative', SEG_T - 1, ValueError),
               ('wrong shape', SEG_T[:, :3], ValueError), ('list', SEG_T.tolist(), TypeError)]
SCORE_TARGETS = [('nan', SCORES.masked_fill(ONEHOT.bool(), NAN), ValueError),
                 ('above 1', SCORES * 255, ValueError), ('negative', -SCORES - 0.1, ValueError),
                 ('wrong shape', SCORES[:4], ValueError), ('list', SCORES.tolist(), TypeError)]


@dataclass
class Entry:
    """One public entry point: how to call it with valid arguments, and its parameters."""
    name: str
    signature_of: Callable
    call: Callable[[dict], object]          # kwargs overriding the valid ones -> result
    kinds: Dict[str, str] = field(default_factory=dict)
    targets: Optional[list] = None          # bad targets for this entry
    skip: tuple = ()                        # parameters that are not arguments (self)

    def parameters(self):
        for p in inspect.signature(self.signature_of).parameters.values():
            if p.name in self.skip or p.name == 'self':
                continue
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                init = self.signature_of.__name__ == '__init__'
                yield p.name, 'unknown_argument' if init else 'var_keyword'
                continue
            yield p.name, self.kinds.get(p.name, KINDS.get(p.name))


def _functional(fn, **valid):
    return lambda over: fn(**{**valid, **over})


def _module_init(cls, forward_valid):
    return lambda over: cls(**over)(**forward_valid)


def _module_forward(cls, forward_valid):
    return lambda over: cls()(**{**forward_valid, **over})


SEG = dict(inputs=SEG_X, targets=SEG_T)
DET_FWD = dict(pred=DET_X, target=LABELS)
ENTRIES = [
    Entry('sigmoid_focal_loss', sigmoid_focal_loss,
          _functional(sigmoid_focal_loss, inputs=DET_X, targets=ONEHOT),
          targets=SCORE_TARGETS + [('int label 2', ONEHOT.long() * 2, ValueError)]),
    Entry('softmax_focal_loss', softmax_focal_loss,
          _functional(softmax_focal_loss, **SEG), kinds={'alpha': 'class_vector'},
          targets=SEG_TARGETS[:3] + SEG_TARGETS[4:]),
    Entry('quality_focal_loss', quality_focal_loss,
          _functional(quality_focal_loss, inputs=DET_X, targets=SCORES), targets=SCORE_TARGETS),
    Entry('varifocal_loss', varifocal_loss,
          _functional(varifocal_loss, inputs=DET_X, targets=SCORES),
          kinds={'alpha': 'non_negative'}, targets=SCORE_TARGETS),
    Entry('unified_focal_loss', unified_focal_loss, _functional(unified_focal_loss, **SEG),
          kinds={'weight': 'probability'}, targets=SEG_TARGETS),
    Entry('asymmetric_focal_loss', asymmetric_focal_loss,
          _functional(asymmetric_focal_loss, **SEG), targets=SEG_TARGETS),
    Entry('focal_tversky_loss', focal_tversky_loss, _functional(focal_tversky_loss, **SEG),
          targets=SEG_TARGETS),
    Entry('StableFocalLoss()', StableFocalLoss.__init__,
          _module_init(StableFocalLoss, DET_FWD), kinds={'ignore_index': 'ignore_index_or_none'}),
    Entry('StableFocalLoss.forward', StableFocalLoss.forward,
          _module_forward(StableFocalLoss, DET_FWD), kinds={'ignore_index': 'ignore_index_or_none'},
          targets=[('bool labels', LABELS > 1, TypeError),
                   ('label above C', LABELS + 1, ValueError),
                   ('negative label', LABELS - 1, ValueError),
                   ('nan one-hot', ONEHOT.masked_fill(ONEHOT.bool(), NAN), ValueError),
                   ('list', LABELS.tolist(), TypeError)]),
    Entry('StableSoftmaxFocalLoss()', StableSoftmaxFocalLoss.__init__,
          _module_init(StableSoftmaxFocalLoss, dict(pred=SEG_X, target=SEG_T)),
          kinds={'alpha': 'class_vector'}),
    Entry('StableSoftmaxFocalLoss.forward', StableSoftmaxFocalLoss.forward,
          _module_forward(StableSoftmaxFocalLoss, dict(pred=SEG_X, target=SEG_T)),
          kinds={'weight': 'seg_weight', 'ignore_index': 'ignore_index_or_none'},
          targets=SEG_TARGETS[:3] + SEG_TARGETS[4:]),
    Entry('StableQualityFocalLoss()', StableQualityFocalLoss.__init__,
          _module_init(StableQualityFocalLoss, dict(pred=DET_X, target=SCORES))),
    Entry('StableQualityFocalLoss.forward', StableQualityFocalLoss.forward,
          _module_forward(StableQualityFocalLoss, dict(pred=DET_X, target=SCORES)),
          targets=SCORE_TARGETS[:-1] + [
              ('bool tuple labels', (LABELS > 1, SCORES.amax(1)), TypeError),
              ('tuple label above C', (LABELS + 1, SCORES.amax(1)), ValueError),
              ('tuple of lists', (LABELS.tolist(), SCORES.amax(1).tolist()), TypeError)]),
    Entry('StableVarifocalLoss()', StableVarifocalLoss.__init__,
          _module_init(StableVarifocalLoss, dict(pred=DET_X, target=SCORES)),
          kinds={'alpha': 'non_negative'}),
    Entry('StableVarifocalLoss.forward', StableVarifocalLoss.forward,
          _module_forward(StableVarifocalLoss, dict(pred=DET_X, target=SCORES)),
          targets=SCORE_TARGETS),
    Entry('UnifiedFocalLoss()', UnifiedFocalLoss.__init__,
          _module_init(UnifiedFocalLoss, dict(pred=SEG_X, target=SEG_T)),
          kinds={'weight': 'probability_or_none'}),
    Entry('StableAsymmetricFocalLoss()', StableAsymmetricFocalLoss.__init__,
          _module_init(StableAsymmetricFocalLoss, dict(pred=SEG_X, target=SEG_T))),
    Entry('StableFocalTverskyLoss()', StableFocalTverskyLoss.__init__,
          _module_init(StableFocalTverskyLoss, dict(pred=SEG_X, target=SEG_T)),
          ),
    Entry('UnifiedFocalLoss.forward', UnifiedFocalLoss.forward,
          _module_forward(UnifiedFocalLoss, dict(pred=SEG_X, target=SEG_T)),
          kinds={'weight': 'seg_weight', 'avg_factor': 'no_avg_factor',
                 'ignore_index': 'ignore_index_or_none'},
          targets=SEG_TARGETS),
    Entry('StableAsymmetricFocalLoss.forward', StableAsymmetricFocalLoss.forward,
          _module_forward(StableAsymmetricFocalLoss, dict(pred=SEG_X, target=SEG_T)),
          kinds={'weight': 'seg_weight', 'avg_factor': 'no_avg_factor',
                 'ignore_index': 'ignore_index_or_none'},
          targets=SEG_TARGETS),
    Entry('GradientSanitizerHook()', GradientSanitizerHook.__init__,
          lambda over: GradientSanitizerHook(**over)),
]
BAD['seg_weight'] = [('list', [1.0] * 32, TypeError),
                     ('nan', torch.ones(2, 4, 4).masked_fill(SEG_T == 0, NAN), ValueError),
                     ('negative', -torch.ones(2, 4, 4), ValueError),
                     ('wrong shape', torch.ones(7), ValueError),
                     ("a number (the unified loss's lambda?)", 0.5, TypeError)]
# a forward's **kwargs (none has one today): keywords a caller passes that the loss refuses
BAD['var_keyword'] = [('weight', {'weight': torch.ones(2, 4, 4)}, TypeError),
                      ('avg_factor', {'avg_factor': 3.0}, TypeError)]
# a constructor's **kwargs: an unknown option fails at build time, naming it
BAD['unknown_argument'] = [('unknown', {'unknown_option': 1}, TypeError),
                           ('misspelt', {'gama': 0.5}, TypeError)]
# names a message may use for a parameter
ALIASES = {'kwargs': ('does not take', 'unknown_option', 'gama'),
           'extra': ('unknown_option', 'gama')}


def _cases():
    for entry in ENTRIES:
        for name, kind in entry.parameters():
            if kind is None:
                continue  # test_every_argument_has_a_rule reports it
            bad = entry.targets if kind == 'targets' else BAD[kind]
            for label, value, error in bad or []:
                yield pytest.param(entry, name, kind, value, error,
                                   id=f'{entry.name}-{name}-{label}')


def test_every_argument_has_a_rule():
    missing = [f'{e.name}: {n}' for e in ENTRIES for n, kind in e.parameters() if kind is None]
    assert not missing, f'arguments without a rule in this table: {missing}'
    no_targets = [e.name for e in ENTRIES for n, kind in e.parameters()
                  if kind == 'targets' and not e.targets]
    assert not no_targets, f'entries without bad targets: {no_targets}'


def test_every_public_loss_is_an_entry():
    names = {e.name.split('(')[0].split('.')[0] for e in ENTRIES}
    public = set(focal_plugin.losses.__all__) | {
        n for n in focal_plugin.functional.__all__ if n.endswith('_loss')}
    assert public <= names, f'public losses without entries: {sorted(public - names)}'


@pytest.mark.parametrize('entry, name, kind, value, error', list(_cases()))
def test_bad_value_is_refused_naming_the_argument(entry, name, kind, value, error):
    over = value if kind in ('var_keyword', 'unknown_argument') else {name: value}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # (a negative loss_weight warns; not the point here)
        with pytest.raises(error) as info:
            entry.call(over)
    message = str(info.value)
    names = ALIASES.get(name, ('labels', 'target') if kind == 'targets' else (name,))
    if kind == 'targets' or name in ('pred', 'inputs'):
        names = names + ('target', 'labels', 'scores', 'inputs', 'pred')
    assert any(n in message for n in names), (name, message)
    # never a Python- or torch-internal message
    for internal in ("not supported between", "int() argument", "float() argument",
                     "object has no attribute", "unsupported operand"):
        assert internal not in message, message


@pytest.mark.parametrize('make', [
    lambda: StableFocalLoss(loss_weight=-1.0), lambda: UnifiedFocalLoss(loss_weight=-0.5),
    lambda: StableQualityFocalLoss(loss_weight=-2.0)], ids=['focal', 'unified', 'qfl'])
def test_negative_loss_weight_is_allowed_with_a_warning_naming_it(make):
    with pytest.warns(UserWarning, match='loss_weight is negative'):
        make()


def test_avg_factor_zero_stays_accepted():
    """mmdet divides by avg_factor + eps on purpose; its heads pass 0 with no positive."""
    out = StableFocalLoss()(DET_X, torch.full((6,), 3), avg_factor=0)
    assert torch.isfinite(out)
    out = StableFocalLoss()(DET_X, LABELS, avg_factor=torch.tensor(0.0))
    assert torch.isfinite(out)


@pytest.mark.parametrize('dtype', [torch.uint8, torch.int16, torch.int32, torch.long],
                         ids=str)
@pytest.mark.parametrize('fn', [softmax_focal_loss, unified_focal_loss, focal_tversky_loss,
                                asymmetric_focal_loss], ids=lambda f: f.__name__)
def test_ignore_index_outside_the_label_dtype_ignores_nothing(fn, dtype):
    """uint8 masks with ignore_index=256 (or -100) used to wrap around to 0 (or 156):
    every class-0 pixel dropped. A value the dtype cannot hold matches no pixel."""
    info = torch.iinfo(dtype)
    outside = [v for v in (256, -100, 2 ** 40) if not info.min <= v <= info.max]
    for ignore_index in outside or [2 ** 40]:
        got = fn(SEG_X, SEG_T.to(dtype), ignore_index=ignore_index)
        want = fn(SEG_X, SEG_T, ignore_index=-7)  # a value no label has: nothing ignored
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_uint8_mask_with_ignore_255_ignores_exactly_those_pixels():
    t = SEG_T.to(torch.uint8).clone()
    t[0, 0] = 255
    got = softmax_focal_loss(SEG_X, t, ignore_index=255, reduction='none')
    assert (got[0, 0] == 0).all() and (got[1] != 0).all()
    want = softmax_focal_loss(SEG_X, t.long(), ignore_index=255, reduction='none')
    torch.testing.assert_close(got, want)
