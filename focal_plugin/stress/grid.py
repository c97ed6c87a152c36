"""The grid of a stress-test sweep: its cells (loss mode x gamma x threshold x noise x seed)
and the ``tools/train.py`` command that trains each one from a config."""
import itertools
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Optional

from .cells import LAST_CHECKPOINT

MODES = ('none', 'epsilon', 'exact')


@dataclass(frozen=True)
class Cell:
    mode: str
    gamma: Optional[float]
    threshold: Optional[int]
    noise: Optional[float]
    seed: Optional[int]

    def name(self, max_epochs):
        parts = [f'{key}{value}' for key, value in (
            ('gamma', self.gamma), ('th', self.threshold), ('noise', self.noise),
            ('seed', self.seed), ('ep', max_epochs)) if value is not None]
        return osp.join(self.mode, '_'.join(parts) or 'config_defaults')


def config_stem(config_template):
    return osp.splitext(osp.basename(config_template.replace('{mode}', 'modes')))[0]


def load_base_values(args):
    """Read the config once: check that the swept axes exist in it and take the values of the
    axes that are not swept (for the CSV)."""
    from mmengine.config import Config
    cfg = Config.fromfile(args.config.format(mode=args.modes[0]))
    dataset = cfg.train_dataloader.dataset
    for axis, key in (('--thresholds', 'threshold'), ('--noises', 'noise')):
        if getattr(args, axis[2:]) and key not in dataset:
            raise SystemExit(f'{axis} given, but the dataset of {args.config} '
                             f'({dataset.get("type")}) has no {key!r} argument')
    loss = cfg.model.get('loss', {})
    return dict(gamma=loss.get('gamma'), alpha=loss.get('alpha'),
                threshold=dataset.get('threshold'), noise=dataset.get('noise'),
                seed=cfg.get('randomness', {}).get('seed'),
                has_val_dataset=bool(cfg.get('val_dataloader')),
                dataset_has_seed='seed' in dataset)


def build_cells(args):
    axes = [args.modes, args.gammas or [None], args.thresholds or [None],
            args.noises or [None], args.seeds or [None]]
    return [Cell(*values) for values in itertools.product(*axes)]


def cell_overrides(args, cell, base):
    opts = []
    if '{mode}' not in args.config:
        opts.append(f'model.loss.stabilizer={cell.mode}')
    if cell.gamma is not None:
        opts.append(f'model.loss.gamma={cell.gamma}')
    loaders = ['train_dataloader'] + (['val_dataloader'] if base['has_val_dataset'] else [])
    for key, value in (('threshold', cell.threshold), ('noise', cell.noise)):
        if value is not None:
            opts += [f'{loader}.dataset.{key}={value}' for loader in loaders]
    if cell.seed is not None:
        opts.append(f'randomness.seed={cell.seed}')
        if base['dataset_has_seed']:
            opts.append(f'train_dataloader.dataset.seed={cell.seed}')
    if args.max_epochs is not None:
        opts.append(f'train_cfg.max_epochs={args.max_epochs}')
    return opts + list(args.cfg_options)


def cell_command(args, cell, base, work_dir, train_script):
    cmd = [sys.executable, train_script, args.config.format(mode=cell.mode),
           '--work-dir', work_dir]
    overrides = cell_overrides(args, cell, base)
    if overrides:
        cmd += ['--cfg-options', *overrides]
    if osp.isfile(osp.join(work_dir, LAST_CHECKPOINT)):
        cmd.append('--resume')  # an interrupted cell continues from its last checkpoint
    return cmd
