"""GradientSanitizerHook in a plain MMEngine pipeline (torch + mmengine only: no MMDetection, no
mmcv): a small regression model trains for 20 iterations, one of which gets a NaN gradient;
the hook skips that update, the weights stay finite, and its report says where it came from.

    python tools/hook_only_example.py --work-dir work_dirs/hook_only_example
"""
import argparse
import math

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import TensorDataset

import focal_plugin  # noqa: F401  (registers GradientSanitizerHook in MMEngine's HOOKS)
from focal_plugin.cli import HelpFormatter


class Regressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, inputs, targets, mode='loss'):
        out = self.net(inputs)
        return dict(loss=nn.functional.mse_loss(out, targets)) if mode == 'loss' else out


class NaNGradientAt(Hook):
    """The fault: a NaN in one gradient at one iteration (what a saturated focal loss does)."""

    def __init__(self, iteration):
        self.iteration = iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.iteration:
            weight = runner.model.net[0].weight
            handle = weight.register_hook(lambda g: (handle.remove(), g * math.nan)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/hook_only_example',
                        help="the runner's work dir (logs, the hook's report)")
    parser.add_argument('--policy', default='skip',
                        help="GradientSanitizerHook's policy for the NaN gradient: warn, skip, "
                        'sanitize, stop or raise')
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    runner = Runner(
        model=Regressor(), work_dir=args.work_dir,
        train_dataloader=dict(dataset=TensorDataset(x, y), batch_size=8, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=lambda batch: dict(
                                  inputs=torch.stack([b[0] for b in batch]),
                                  targets=torch.stack([b[1] for b in batch]))),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05)),
        train_cfg=dict(by_epoch=False, max_iters=20),
        custom_hooks=[dict(type='GradientSanitizerHook', policy=args.policy), NaNGradientAt(7)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=5)),
        randomness=dict(seed=0))
    runner.train()
    finite = all(bool(torch.isfinite(p).all()) for p in runner.model.parameters())
    print(f'weights finite after training: {finite}; report: '
          f'{args.work_dir}/gradient_sanitizer_report.json')
    return 0 if finite else 1


if __name__ == '__main__':
    raise SystemExit(main())
