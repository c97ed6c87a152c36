"""Time one SGD step (forward + backward + step) of a stress config's model at several widths,
to choose the width of a long run before starting it.

    .venv/bin/python tools/time_train_step.py CONFIG [--base-channels 8 16] [--steps 25]

Random inputs of the config's batch size and image size, one thread unless OMP_NUM_THREADS
says otherwise; prints the median of the steps after 5 warm-up steps.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from mmengine.config import Config
from mmengine.registry import MODELS

import focal_plugin  # noqa: F401  (registers the models)
from focal_plugin.cli import HelpFormatter


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('config', help='a stress config; its model and batch size are timed')
    parser.add_argument('--base-channels', type=int, nargs='+', default=[8, 16],
                        help='model widths to time, one line each')
    parser.add_argument('--steps', type=int, default=25,
                        help='timed steps per width (after 5 untimed warm-up steps)')
    parser.add_argument('--image-size', type=int, default=28,
                        help='side of the random square inputs, in pixels')
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    cfg = Config.fromfile(args.config)
    batch = cfg.train_dataloader.batch_size
    size = (batch, 1, args.image_size, args.image_size)
    for channels in args.base_channels:
        model = MODELS.build(dict(cfg.model, base_channels=channels))
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        x, t = torch.rand(size), (torch.rand(size) > 0.87).float()
        times = []
        for _ in range(args.steps + 5):
            start = time.perf_counter()
            loss = model(x, t, mode='loss')['loss']
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters())
        print(f'base_channels {channels}: batch {batch}, {params} parameters, '
              f'{statistics.median(times[5:]) * 1e3:.1f} ms per step (median of {args.steps})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
