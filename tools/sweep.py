"""Run a grid of stress-test trainings (gamma x threshold x noise x loss mode x seed), one
``tools/train.py`` process per cell, and summarize it as a CSV and paper-style figures.

    python tools/sweep.py CONFIG [--modes none epsilon exact] [--gammas 0.1 0.5 ...]
        [--thresholds 0 2 4 ...] [--noises 0 0.5 ...] [--seeds 0 ...] [--max-epochs N]
        [--jobs J] [--threads-per-job T] [--work-root DIR] [--out DIR]
        [--plot heatmap curves] [--cfg-options KEY=VALUE ...] [--dry-run]

* CONFIG may contain ``{mode}`` (e.g. ``configs/stress/mnist_binary/..._cpu_{mode}.py``): each
  loss mode then runs its own config file. Without it, one config serves all modes and the
  sweep sets ``model.loss.stabilizer``.
* An axis that is not given keeps the config's value (so a segmentation config needs no
  ``--thresholds``). Threshold and noise are set in both the train and the val dataset.
* Resumable: a cell whose work dir already holds a finished record (``divergence.json`` with
  status 'completed' or 'diverged') is skipped; an interrupted cell is resumed from its last
  checkpoint. Cells run in parallel processes, each limited to ``--threads-per-job`` threads.
* Runs that outlive their machine (``--snapshot-dir DIR``): every new checkpoint of a running
  cell is copied to ``DIR/<cell>/`` (with its ``divergence.json`` and ``sweep_cell.json``), a
  few MB that can be committed. A later sweep with the same ``--snapshot-dir`` on a fresh
  clone restores each cell from there and resumes it; a finished cell keeps only its records.
  Wall time adds up over the legs (``sweep_cell.json`` lists each leg).
* Output (``--out``): ``results.csv`` (one row per cell: completed epochs, first non-finite
  epoch/iteration, final loss and accuracy, wall time), ``curves.json`` (per-epoch training
  loss of every cell), ``sweep.json`` (each invocation's command, machine and wall time) and
  the figures ``completed_epochs_heatmap.png`` (gamma x class ratio per loss mode and noise
  level) and ``loss_curves.png`` (training loss per epoch, a cross at the first non-finite
  step).

The engine lives in :mod:`focal_plugin.stress`; this file only parses the arguments.
"""
import argparse
import os.path as osp
import shlex
import sys

from focal_plugin.cli import HelpFormatter
from focal_plugin.stress.grid import MODES
from focal_plugin.stress.sweep import run_sweep

TRAIN_SCRIPT = osp.join(osp.dirname(osp.abspath(__file__)), 'train.py')


def non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'must be a number >= 0, got {text!r}')
    return value

def threshold_value(text):
    value = int(text)
    if not 0 <= value <= 8:
        raise argparse.ArgumentTypeError(f'threshold must be in 0..8, got {text!r}')
    return value

def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive int, got {text!r}')
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('config', help='config file; may contain {mode}')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=['none', 'exact'],
                        help='loss modes (stabilizer) to run')
    parser.add_argument('--gammas', nargs='+', type=non_negative_float,
                        help="focal loss gammas (default: the config's)")
    parser.add_argument('--thresholds', nargs='+', type=threshold_value,
                        help='BinaryMNIST digit thresholds 0..8 (digits <= threshold are the '
                        "positive class), set in train and val (default: the config's)")
    parser.add_argument('--noises', nargs='+', type=non_negative_float,
                        help='amplitudes of the uniform input noise, set in train and val '
                        "(default: the config's)")
    parser.add_argument('--seeds', nargs='+', type=int,
                        help="training seeds (default: the config's)")
    parser.add_argument('--max-epochs', type=positive_int,
                        help="override train_cfg.max_epochs (default: the config's)")
    parser.add_argument('--jobs', type=positive_int, default=1, help='parallel processes')
    parser.add_argument('--threads-per-job', type=positive_int,
                        help='torch threads per process (default: CPUs // jobs)')
    parser.add_argument('--work-root', help='where the cells train (default: '
                        'work_dirs/sweeps/<config name>)')
    parser.add_argument('--out', help='where CSV, JSON and figures go (default: work root)')
    parser.add_argument('--plot', nargs='*', choices=('heatmap', 'curves'),
                        help='figures to draw (default: heatmap if --thresholds is swept, '
                        'else loss curves; give no value to draw none)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='extra KEY=VALUE overrides passed to every cell')
    parser.add_argument('--snapshot-dir',
                        help='copy each running cell\'s newest checkpoint and records here '
                        '(to commit), and restore cells from here when their work dir has none '
                        '(default: none, no snapshots)')
    parser.add_argument('--dry-run', action='store_true', help='print the commands only')
    parser.add_argument('--budget-s', type=float, default=None,
                        help='wall-time budget in seconds: then every running cell stops at '
                        'the end of its epoch and the results are written (default: none)')
    parser.add_argument('--stop-on-divergence', action='store_true',
                        help='stop every cell once one diverges (side-by-side runs)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    failures = run_sweep(args, shlex.join(['python', 'tools/sweep.py', *argv]), TRAIN_SCRIPT)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
