"""Counters survive checkpoints and resume; localization names the module; data is protected."""
import json
import os.path as osp

import pytest
import torch
from mmengine.model import BaseModel
from sanitizer_toys import (
    FaultInjectionHook,
    RecordHook,
    ToyDataset,
    checkpoint_is_finite,
    checkpoints,
    make_runner,
    sanitizer_of,
)

from focal_plugin.hooks.localize import localize_nonfinite

HOOK = dict(type='GradientSanitizerHook', policy='skip')


@pytest.fixture
def trusted_checkpoint_loading(monkeypatch):
    # mmengine 0.10.7 calls torch.load without weights_only; torch >= 2.6 defaults it to True.
    # `import focal_plugin` allow-lists what MMEngine checkpoints hold (focal_plugin.checkpoints),
    # so weights-only loading stays on: make sure nothing turned it off.
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)


def read_report(work_dir):
    with open(osp.join(work_dir, 'gradient_sanitizer_report.json')) as f:
        return json.load(f)


def test_counters_are_checkpointed_and_restored_on_resume(work_dir, trusted_checkpoint_loading):
    first = make_runner(work_dir, HOOK, max_iters=6, checkpoint_interval=6,
                        extra_hooks=(FaultInjectionHook({1: 'grad_nan', 4: 'loss_nan'}),))
    first.train()
    saved = torch.load(osp.join(work_dir, 'iter_6.pth'), map_location='cpu', weights_only=False)
    assert saved['gradient_sanitizer']['counters']['skipped'] == 2

    record = RecordHook()
    resumed = make_runner(work_dir, HOOK, max_iters=10, checkpoint_interval=6, resume=True,
                          extra_hooks=(FaultInjectionHook({7: 'grad_inf'}), record))
    resumed.train()
    hook = sanitizer_of(resumed)
    assert resumed.iter == 10
    assert hook.counters['skipped'] == hook.counters['events'] == 3
    assert record.logged_counters[-1]['train/nonfinite_skipped'] == 3
    report = read_report(work_dir)  # events of the interrupted run are kept
    assert [e['iter'] for e in report['events']] == [2, 5, 8]
    assert report['counters']['skipped'] == 3


def test_load_from_does_not_carry_counters_over(tmp_path, trusted_checkpoint_loading):
    source = str(tmp_path / 'source')
    make_runner(source, HOOK, max_iters=4, extra_hooks=(FaultInjectionHook({1: 'grad_nan'}),)
                ).train()
    finetune = make_runner(str(tmp_path / 'finetune'), HOOK, max_iters=2,
                           load_from=osp.join(source, 'iter_4.pth'))
    finetune.train()
    assert sanitizer_of(finetune).counters['events'] == 0


def test_localization_names_the_first_nonfinite_module_and_protects_bn(work_dir):
    # sample 13 has an Inf input: iteration 3 (samples 12..15) goes non-finite in backbone.0
    dataset = ToyDataset(64, poison={13: float('inf')})
    record = RecordHook()
    runner = make_runner(work_dir, dict(HOOK, localize=True), max_iters=8, dataset=dataset,
                         extra_hooks=(record,))
    runner.train()
    assert runner.iter == 8 and all(record.finite_after_iter)  # BN statistics restored too
    assert all(checkpoint_is_finite(p) for p in checkpoints(work_dir))
    event = read_report(work_dir)['first_event']
    assert event['iter'] == 4
    localization = event['ranks'][0]['localization']
    # the input itself is non-finite: the data preprocessor's output is the first hit
    assert [(h['module'], h['type']) for h in localization['forward'][:2]] == [
        ('data_preprocessor', 'BaseDataPreprocessor'), ('backbone.0', 'Linear')]
    assert 'corrupt sample' in localization['conclusion']
    assert 'toy/sample_013.png' in [s['img_path'] for s in event['ranks'][0]['batch']]


class SqrtAtZero(BaseModel):
    """Forward finite, backward NaN: d sqrt(x)/dx at x = 0 is Inf (like focal loss with
    gamma < 1 at a saturated probability)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(2, 2)
        self.last = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.last(self.body(inputs))
        return dict(loss_sqrt=torch.sqrt(out * 0).sum() + out.sum())


def test_localize_backward_only_nonfinite_and_restores_state():
    torch.manual_seed(0)
    model = SqrtAtZero()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = dict(inputs=torch.randn(3, 2))
    rng = torch.get_rng_state()
    result = localize_nonfinite(model, batch)
    assert result['forward'] == []
    assert result['backward'][0]['module'] == 'last'
    assert 'created between that output and the loss' in result['conclusion']
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_localize_reports_errors_instead_of_raising():
    result = localize_nonfinite(SqrtAtZero(), dict(wrong_key=1))
    assert 'error' in result and 'conclusion' not in result


class DetachedNanTerm(SqrtAtZero):
    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.last(self.body(inputs))
        return dict(loss_fit=out.pow(2).mean(), loss_logged=torch.tensor(float('nan')))


def test_localize_points_at_loss_code_when_every_module_is_finite():
    torch.manual_seed(0)
    result = localize_nonfinite(DetachedNanTerm(), dict(inputs=torch.randn(3, 2)))
    assert result['forward'] == [] and result['backward'] == []
    assert result['loss'] == 'nan'
    assert 'loss code outside modules' in result['conclusion']
