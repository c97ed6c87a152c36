"""The stress engine's own cost per iteration: a stress config trained through MMEngine's
Runner (data loading, hooks, logging, the divergence recorder, the gradient audit) vs the bare
step of the same model (forward + backward + SGD step on a batch already in memory), with a
tiny model so that the difference is the engine and not the math. That difference is the
ceiling on steps per second on a GPU, where the model's step is fast.

    .venv/bin/python tools/engine_overhead.py \\
        configs/stress/mnist_segmentation/unet_sgd-1000e_mnist-seg_exact.py \\
        --base-channels 1 --batch 64 --epochs 3

Synthetic MNIST-like data (``--images``, default 64 x 40) is written to a temporary folder;
one thread, no validation inside the timed epochs. The engine's cost is measured in the same
iterations as the step (time per iteration minus time inside ``model.train_step``), so it holds
on a loaded machine too.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import focal_plugin  # noqa: F401  (registers the models, datasets, hooks)
from focal_plugin.cli import HelpFormatter
from focal_plugin.datasets.synthetic import write_synthetic_mnist


class IterationClock(Hook):
    """Wall time from one iteration's start to the next (everything the loop does) and, in
    the same iterations, the time inside ``model.train_step`` (data preprocessor, forward,
    backward, the audited optimizer step): the rest is the engine's own cost."""

    priority = 'VERY_HIGH'

    def __init__(self):
        self.starts, self.steps = [], []

    def before_train(self, runner):
        original = runner.model.train_step

        def train_step(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.steps.append(time.perf_counter() - start)
        runner.model.train_step = train_step  # this measurement's runner only

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.starts.append(time.perf_counter())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('config', help='a stress config (e.g. the 64-channel segmentation one)')
    parser.add_argument('--base-channels', type=int, default=1, help='model width (tiny: 1)')
    parser.add_argument('--batch', type=int, default=64, help='batch size (train and val)')
    parser.add_argument('--images', type=int, default=64 * 40, help='synthetic images')
    parser.add_argument('--epochs', type=int, default=3,
                        help='training epochs; all are timed (no validation in between)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = Config.fromfile(args.config)
    if 'base_channels' in cfg.model:
        cfg.model.base_channels = args.base_channels
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_mnist(tmp, split='test', num_samples=args.images)
        for loader in ('train_dataloader', 'val_dataloader'):
            cfg[loader].dataset.data_root = tmp
            cfg[loader].dataset.split = 'test'
            cfg[loader].batch_size = args.batch
            cfg[loader].num_workers = 0
            cfg[loader].persistent_workers = False
        cfg.train_cfg.max_epochs = args.epochs
        cfg.train_cfg.val_interval = args.epochs + 1  # no validation inside the timed loop
        cfg.work_dir = os.path.join(tmp, 'run')
        cfg.default_hooks.checkpoint.interval = args.epochs + 1
        clock = IterationClock()
        cfg.custom_hooks = list(cfg.custom_hooks)
        runner = Runner.from_cfg(cfg)
        runner.register_hook(clock)
        runner.train()
    per_epoch = args.images // args.batch
    # iterations inside an epoch (not an epoch's first or last: loader start, epoch hooks)
    inner = [i for i in range(len(clock.starts) - 1)
             if i % per_epoch not in (0, per_epoch - 1)]
    total = [clock.starts[i + 1] - clock.starts[i] for i in inner]
    outside = [total[k] - clock.steps[i] for k, i in enumerate(inner)]
    ms = [statistics.median(v) * 1e3 for v in (total, [clock.steps[i] for i in inner],
                                                outside)]
    print(f'config {args.config}, base_channels {args.base_channels}, batch {args.batch}, '
          f'{len(inner)} iterations timed, 1 thread')
    print(f'iteration (Runner, every hook): {ms[0]:.2f} ms (median)')
    print(f'inside model.train_step (forward, backward, audited step): {ms[1]:.2f} ms')
    print(f'engine overhead outside train_step (data, hooks, logging, recorder): '
          f'{ms[2]:.2f} ms per iteration (median of the per-iteration differences)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
