"""Train a model from an MMEngine config: MMDetection's ``tools/train.py`` CLI, plus
``import focal_plugin`` so that configs without ``custom_imports`` find the plugin's losses,
hooks, models and datasets.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr] [--resume [CKPT]]
                          [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

Works for the stress-test configs (``configs/stress``, MMEngine alone is enough) and for
MMDetection configs (mmdet installed): those set
``default_scope = 'mmdet'``, and the Runner then imports mmdet's modules and builds every
component from mmdet's registries, as mmdet's own script does.
"""
import argparse
import logging
import os
import os.path as osp
import signal
import sys

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import focal_plugin  # noqa: F401  (registers the plugin's classes)
from focal_plugin.cli import HelpFormatter


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (focal_plugin / MMDetection)',
                                     formatter_class=HelpFormatter)
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models (default: the '
                        "config's work_dir, else ./work_dirs/<config name>)")
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='If specify checkpoint path, resume from it, while if not specify, try to auto '
        'resume from the latest checkpoint in the work directory.')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy '
        'format will be merged into config file. If the value to be overwritten is a list, '
        'it should be like key="[a,b]" or key=a,b It also allows nested list/tuple values, '
        'e.g. key="[(a,b),(c,d)]" Note that the quotation marks are necessary and that no '
        'white space is allowed.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by the distributed launcher (torch.distributed.launch); '
                        'not to be given by hand')
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args) -> Config:
    """Load the config and apply the command line to it, exactly like mmdet's script."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.', logger='current',
                      level=logging.WARNING)
        else:
            if optim_wrapper != 'OptimWrapper':
                raise ValueError('`--amp` is only supported when the optimizer wrapper type is '
                                 f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr \
                and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or "auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your configuration file.')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def setup_cache_size_limit_of_dynamo() -> None:
    """mmdet's ``DYNAMO_CACHE_SIZE_LIMIT`` environment variable, honoured without importing
    mmdet (the stress configs run with MMEngine alone)."""
    if 'DYNAMO_CACHE_SIZE_LIMIT' in os.environ:
        import torch._dynamo
        limit = int(os.environ['DYNAMO_CACHE_SIZE_LIMIT'])
        torch._dynamo.config.cache_size_limit = limit
        print_log(f'torch._dynamo.config.cache_size_limit is force set to {limit}.',
                  logger='current', level=logging.WARNING)


class GracefulStop:
    """SIGINT/SIGTERM (Ctrl-C, ``kill``, a scheduler, a closed terminal) end training at the
    end of the current epoch (iteration, for iteration-based loops), where the checkpoint
    hooks save it, instead of losing everything since the last interval checkpoint; a second
    signal stops at once. The process then exits with 128 + the signal number, so that a
    sweep does not mistake the cut-short run for a finished one."""

    def __init__(self, runner):
        self.runner, self.signum = runner, None
        self.previous = {signum: signal.signal(signum, self._handle)
                         for signum in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f'second {signal.Signals(signum).name}: stopping now')
        self.signum = signum
        self.runner.train_loop.stop_training = True
        print_log(f'{signal.Signals(signum).name} received: stopping at the end of this '
                  f'{"epoch" if hasattr(self.runner.train_loop, "max_epochs") else "iteration"}'
                  ' (after its checkpoint); send it again to stop now', logger='current',
                  level=logging.WARNING)

    def exit_code(self):
        """Restore the previous handlers; 0, or 128 + the signal that stopped training."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.signum is None:
            return 0
        print_log(f'stopped by {signal.Signals(self.signum).name}; continue with the same '
                  'command plus --resume', logger='current', level=logging.WARNING)
        return 128 + self.signum


def main(argv=None):
    args = parse_args(argv)
    # Reduce the number of repeated compilations and improve training speed (as mmdet does).
    setup_cache_size_limit_of_dynamo()
    cfg = build_config(args)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    stop = GracefulStop(runner)
    try:
        runner.train()
    finally:
        runner.exit_code = stop.exit_code()
    return runner


if __name__ == '__main__':
    sys.exit(main().exit_code)
