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
"""
import argparse
import csv
import itertools
import json
import os
import os.path as osp
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN_SCRIPT = osp.join(REPO_ROOT, 'tools', 'train.py')
MODES = ('none', 'epsilon', 'exact')
RECORD_FILE = 'divergence.json'  # written by DivergenceRecorderHook
CELL_FILE = 'sweep_cell.json'  # written here: command, exit code, wall time
FINISHED = ('completed', 'diverged')
LAST_CHECKPOINT = 'last_checkpoint'  # mmengine's pointer to the newest checkpoint
CSV_COLUMNS = [
    'mode', 'gamma', 'alpha', 'threshold', 'noise', 'seed', 'positive_fraction', 'max_epochs',
    'iters_per_epoch', 'status', 'completed_epochs', 'nonfinite_epoch', 'nonfinite_iter',
    'nonfinite_reason', 'final_train_loss', 'final_train_acc', 'val_accuracy', 'val_f1',
    'wall_s', 'config', 'work_dir'
]


# ------------------------------------------------------------------------------ the grid
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
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file; may contain {mode}')
    parser.add_argument('--modes', nargs='+', choices=MODES, default=['none', 'exact'],
                        help='loss modes (stabilizer) to run')
    parser.add_argument('--gammas', nargs='+', type=non_negative_float)
    parser.add_argument('--thresholds', nargs='+', type=threshold_value)
    parser.add_argument('--noises', nargs='+', type=non_negative_float)
    parser.add_argument('--seeds', nargs='+', type=int)
    parser.add_argument('--max-epochs', type=positive_int, help='override train_cfg.max_epochs')
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
                        '(to commit), and restore cells from here when their work dir has none')
    parser.add_argument('--dry-run', action='store_true', help='print the commands only')
    return parser.parse_args(argv)


def config_stem(config_template):
    return osp.splitext(osp.basename(config_template.replace('{mode}', 'modes')))[0]


def load_base_values(args):
    """Read the config once: check that the swept axes exist in it and take the values of the
    axes that are not swept (for the CSV)."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)  # custom_imports=['focal_plugin'] from a checkout
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


def cell_command(args, cell, base, work_dir):
    cmd = [sys.executable, TRAIN_SCRIPT, args.config.format(mode=cell.mode),
           '--work-dir', work_dir]
    overrides = cell_overrides(args, cell, base)
    if overrides:
        cmd += ['--cfg-options', *overrides]
    if osp.isfile(osp.join(work_dir, LAST_CHECKPOINT)):
        cmd.append('--resume')  # an interrupted cell continues from its last checkpoint
    return cmd


# ---------------------------------------------------------------------------- running
def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_finished(work_dir):
    record = read_json(osp.join(work_dir, RECORD_FILE))
    cell = read_json(osp.join(work_dir, CELL_FILE))
    return bool(record and record.get('status') in FINISHED and cell
                and cell.get('returncode') == 0)


def describe(record):
    if not record:
        return 'no record'
    if record['status'] == 'diverged':
        nf = record['nonfinite']
        return (f"diverged at epoch {nf['epoch']}, iteration {nf['iteration']} "
                f"({record['completed_epochs']} epochs completed)")
    return f"{record['status']} ({record['completed_epochs']}/{record['max_epochs']} epochs)"


def log_tail(path, lines=15):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


def write_json(path, data):
    """Write atomically: a snapshot copied or committed mid-write is never half a file."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


class Snapshot:
    """A cell's progress outside its work dir: the newest checkpoint and the records, in
    ``root/<cell>/``, small enough to commit. ``save`` follows a running cell, ``restore``
    seeds an empty work dir from it (so ``--resume`` continues the run on another machine)."""

    RECORDS = (RECORD_FILE, CELL_FILE)

    def __init__(self, root, name):
        self.dir = osp.join(root, name)
        self._saved = None  # the checkpoint copied last

    def checkpoints(self):
        if not osp.isdir(self.dir):
            return []
        return sorted(f for f in os.listdir(self.dir) if f.endswith('.pth'))

    def restore(self, work_dir):
        """Copy records and checkpoint into ``work_dir`` unless it has its own progress."""
        if osp.isfile(osp.join(work_dir, RECORD_FILE)) or not osp.isdir(self.dir):
            return False
        os.makedirs(work_dir, exist_ok=True)
        for name in self.RECORDS + tuple(self.checkpoints()):
            if osp.isfile(osp.join(self.dir, name)):
                shutil.copy2(osp.join(self.dir, name), osp.join(work_dir, name))
        for name in self.checkpoints()[-1:]:
            with open(osp.join(work_dir, LAST_CHECKPOINT), 'w') as f:
                f.write(osp.abspath(osp.join(work_dir, name)))
        return True

    def _copy_here(self, src_dir, name):
        tmp = osp.join(self.dir, name + '.tmp')
        shutil.copy2(osp.join(src_dir, name), tmp)
        os.replace(tmp, osp.join(self.dir, name))

    def save_checkpoint(self, work_dir):
        """Copy the work dir's newest checkpoint if it is new; only the newest is kept.
        (mmengine writes ``last_checkpoint`` after the checkpoint file is complete.)"""
        try:
            with open(osp.join(work_dir, LAST_CHECKPOINT)) as f:
                checkpoint = f.read().strip()
        except OSError:
            return False
        if checkpoint == self._saved or not osp.isfile(checkpoint):
            return False
        os.makedirs(self.dir, exist_ok=True)
        older = [f for f in self.checkpoints() if f != osp.basename(checkpoint)]
        self._copy_here(osp.dirname(checkpoint), osp.basename(checkpoint))
        for name in older:
            os.remove(osp.join(self.dir, name))
        self._saved = checkpoint
        return True

    def save_records(self, work_dir, keep_checkpoint=True):
        """Copy the records; a finished cell needs no weights to be resumed."""
        os.makedirs(self.dir, exist_ok=True)
        for name in self.RECORDS:
            if osp.isfile(osp.join(work_dir, name)):
                self._copy_here(work_dir, name)
        if not keep_checkpoint:
            for name in self.checkpoints():
                os.remove(osp.join(self.dir, name))


class CellRun:
    """One running ``tools/train.py`` process: one leg of a cell, which may take several
    (interrupted and resumed); ``sweep_cell.json`` lists the legs and their total wall time."""

    def __init__(self, cell, cmd, work_dir, threads, snapshot=None):
        os.makedirs(work_dir, exist_ok=True)
        self.cell, self.cmd, self.work_dir, self.snapshot = cell, cmd, work_dir, snapshot
        self.log_path = osp.join(work_dir, 'sweep_stdout.log')
        earlier = read_json(osp.join(work_dir, CELL_FILE)) or {}
        self._earlier_legs = earlier.get('legs') or (
            [dict(command=earlier['command'], returncode=earlier.get('returncode'),
                  wall_s=earlier['wall_s'])] if 'wall_s' in earlier else [])
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self._log = open(self.log_path, 'a')
        self.start = time.time()
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env)

    def _write_meta(self, code):
        legs = self._earlier_legs + [dict(command=shlex.join(self.cmd), returncode=code,
                                          wall_s=time.time() - self.start)]
        write_json(osp.join(self.work_dir, CELL_FILE), dict(
            command=shlex.join(self.cmd), returncode=code,
            wall_s=sum(leg['wall_s'] for leg in legs), legs=legs))

    def poll(self):
        """None while running; else the exit code (and the cell's sweep record is written).
        With a snapshot, a new checkpoint is copied there as soon as it appears."""
        code = self.process.poll()
        if code is None:
            if self.snapshot is not None and self.snapshot.save_checkpoint(self.work_dir):
                self._write_meta(None)  # the wall time so far, in case this leg is cut off
                self.snapshot.save_records(self.work_dir)
            return None
        self._log.close()
        self._write_meta(code)
        if self.snapshot is not None:
            self.snapshot.save_checkpoint(self.work_dir)
            self.snapshot.save_records(self.work_dir,
                                       keep_checkpoint=not is_finished(self.work_dir))
        return code

    def epochs_done(self):
        record = read_json(osp.join(self.work_dir, RECORD_FILE)) or {}
        return record.get('completed_epochs', 0), record.get('max_epochs')


def run_cells(todo, jobs, threads, total, skipped):
    """Run ``todo`` = [(cell, cmd, work_dir, snapshot or None)] with at most ``jobs``
    processes at a time, showing a progress bar over all cells and one line per running
    cell."""
    columns = (TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    failures = 0
    with Progress(*columns, refresh_per_second=2) as progress:
        overall = progress.add_task('sweep', total=total, completed=skipped)
        queue, running = list(todo), {}
        while queue or running:
            while queue and len(running) < jobs:
                cell, cmd, work_dir, snapshot = queue.pop(0)
                run = CellRun(cell, cmd, work_dir, threads, snapshot)
                running[run] = progress.add_task(f'  {cell.name(None)}', total=None)
            time.sleep(1.0)
            for run, task in list(running.items()):
                done, max_epochs = run.epochs_done()
                progress.update(task, completed=done, total=max_epochs)
                code = run.poll()
                if code is None:
                    continue
                progress.remove_task(task)
                del running[run]
                progress.advance(overall)
                record = read_json(osp.join(run.work_dir, RECORD_FILE))
                wall = time.time() - run.start
                if code == 0 and record and record.get('status') in FINISHED:
                    progress.console.print(f'{run.cell.name(None)}: {describe(record)} '
                                           f'[{wall:.0f} s]', highlight=False)
                else:
                    failures += 1
                    progress.console.print(
                        f'{run.cell.name(None)}: FAILED (exit code {code}); log '
                        f'{run.log_path}:\n{log_tail(run.log_path)}', highlight=False)
    return failures


# ---------------------------------------------------------------------------- results
def csv_row(cell, base, config, work_dir):
    record = read_json(osp.join(work_dir, RECORD_FILE)) or {}
    meta = read_json(osp.join(work_dir, CELL_FILE)) or {}
    nonfinite = record.get('nonfinite') or {}
    val = record.get('val_metrics') or {}
    status = record.get('status', 'missing')
    if meta.get('returncode') not in (0, None) or (meta and status not in FINISHED):
        status = 'error'

    def last(key):
        values = record.get(key) or []
        return values[-1] if values else None

    def pick(value, key):
        return base[key] if value is None else value

    return dict(
        mode=cell.mode, gamma=pick(cell.gamma, 'gamma'), alpha=base['alpha'],
        threshold=pick(cell.threshold, 'threshold'), noise=pick(cell.noise, 'noise'),
        seed=pick(cell.seed, 'seed'), positive_fraction=record.get('positive_fraction'),
        max_epochs=record.get('max_epochs'), iters_per_epoch=record.get('iters_per_epoch'),
        status=status, completed_epochs=record.get('completed_epochs'),
        nonfinite_epoch=nonfinite.get('epoch'), nonfinite_iter=nonfinite.get('iteration'),
        nonfinite_reason=nonfinite.get('reason'), final_train_loss=last('train_loss'),
        final_train_acc=last('train_acc'), val_accuracy=val.get('binary/accuracy'),
        val_f1=val.get('binary/f1'), wall_s=meta.get('wall_s'), config=config,
        work_dir=work_dir)


def write_csv(path, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: '' if v is None else v for k, v in row.items()})


def curves_of(rows):
    curves = []
    for row in rows:
        record = read_json(osp.join(row['work_dir'], RECORD_FILE)) or {}
        curves.append(dict(
            label=curve_label(row), mode=row['mode'], status=row['status'],
            train_loss=record.get('train_loss', []), nonfinite=record.get('nonfinite'),
            iters_per_epoch=record.get('iters_per_epoch')))
    return curves


def curve_label(row):
    label = f"{row['mode']}, γ={row['gamma']}"
    if row['threshold'] not in (None, ''):
        label += f", TH={row['threshold']}"
    return label + f", noise={row['noise']}"


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_heatmaps(rows, path):
    import numpy as np
    plt = _pyplot()

    modes = [m for m in MODES if any(r['mode'] == m for r in rows)]
    noises = sorted({r['noise'] for r in rows})
    gammas = sorted({r['gamma'] for r in rows})
    thresholds = sorted({r['threshold'] for r in rows})
    max_epochs = max((r['max_epochs'] or 0) for r in rows) or 1
    fig, axes = plt.subplots(len(modes), len(noises), squeeze=False, layout='constrained',
                             figsize=(1.1 * len(thresholds) * len(noises) + 2,
                                      (0.3 * len(gammas) + 1.1) * len(modes) + 0.3))
    for i, mode in enumerate(modes):
        for j, noise in enumerate(noises):
            ax = axes[i][j]
            grid = np.full((len(gammas), len(thresholds)), np.nan)
            labels = np.full(grid.shape, '–', dtype=object)  # '–': not run / failed to run
            fractions = {}
            for r in rows:
                if r['mode'] != mode or r['noise'] != noise or r['status'] not in FINISHED:
                    continue
                at = gammas.index(r['gamma']), thresholds.index(r['threshold'])
                grid[at] = r['completed_epochs']
                # ✓: no non-finite step within the run; a number alone: epochs before it
                labels[at] = f"{r['completed_epochs']}" + (
                    ' ✓' if r['status'] == 'completed' else '')
                if r['positive_fraction'] is not None:
                    fractions[r['threshold']] = r['positive_fraction']
            image = ax.imshow(grid, cmap='RdYlGn', vmin=0, vmax=max_epochs, aspect='auto')
            for (gi, ti), text in np.ndenumerate(labels):
                ax.text(ti, gi, text, ha='center', va='center', fontsize=7)
            ax.set_xticks(range(len(thresholds)),
                          [f'{t}\n{fractions[t]:.0%}' if t in fractions else f'{t}'
                           for t in thresholds], fontsize=7)
            ax.set_yticks(range(len(gammas)), [f'{g:g}' for g in gammas], fontsize=7)
            ax.set_title(f'{mode}, noise {noise}', fontsize=9)
            ax.set_xlabel('threshold TH (positive fraction)', fontsize=8)
            ax.set_ylabel('γ', fontsize=8)
    colorbar = fig.colorbar(image, ax=axes, shrink=0.8)
    colorbar.set_label(f'epochs completed before the first non-finite step\n'
                       f'(of {max_epochs}; ✓ = none within the run)', fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


def plot_loss_curves(curves, path):
    plt = _pyplot()

    styles = {'none': '-', 'epsilon': '--', 'exact': ':'}  # overlapping curves stay visible
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for curve in curves:
        losses = curve['train_loss']
        epochs = list(range(1, len(losses) + 1))
        line, = ax.plot(epochs, losses, styles.get(curve['mode'], '-'), label=curve['label'])
        nonfinite = curve['nonfinite']
        if nonfinite:
            # Where the failure happened, in (fractional) epochs, at the end of the curve.
            x = nonfinite['iteration'] / curve['iters_per_epoch']
            y = losses[-1] if losses else nonfinite.get('last_finite_loss')
            ax.plot([x], [y], marker='x', markersize=12, markeredgewidth=2.5,
                    color=line.get_color(), linestyle='none')
    ax.set_yscale('log')
    ax.set_xlabel('epoch')
    ax.set_ylabel('mean training loss per epoch')
    ax.set_title('Training loss (× = first non-finite step)')
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches='tight')
    plt.close(fig)


def machine_info():
    model = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            model = next((line.split(':', 1)[1].strip() for line in f
                          if line.startswith('model name')), model)
    except OSError:
        pass
    import torch
    return dict(platform=platform.platform(), cpu=model, cpus=os.cpu_count(),
                python=platform.python_version(), torch=torch.__version__)


def log_invocation(path, entry):
    """Append this invocation to ``sweep.json``: a resumed sweep keeps the earlier runs'
    commands and wall times (the cells' own wall times are in the CSV)."""
    invocations = (read_json(path) or {}).get('invocations', [])
    with open(path, 'w') as f:
        json.dump(dict(invocations=invocations + [entry]), f, indent=1)


# ------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    base = load_base_values(args)
    work_root = args.work_root or osp.join('work_dirs', 'sweeps', config_stem(args.config))
    out = args.out or work_root
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    threads = args.threads_per_job or max(1, (cpus or 1) // args.jobs)

    cells = build_cells(args)
    plan = []
    restored = 0
    for cell in cells:
        work_dir = osp.join(work_root, cell.name(args.max_epochs))
        snapshot = None
        if args.snapshot_dir:
            snapshot = Snapshot(args.snapshot_dir, cell.name(args.max_epochs))
            restored += not args.dry_run and snapshot.restore(work_dir)
        plan.append((cell, cell_command(args, cell, base, work_dir), work_dir, snapshot))
    todo = [item for item in plan if not is_finished(item[2])]
    print(f'{len(cells)} cells, {len(cells) - len(todo)} already finished, {len(todo)} to run '
          f'({args.jobs} at a time, {threads} thread(s) each); work root {work_root}'
          + (f'; {restored} restored from {args.snapshot_dir}' if restored else ''))
    if args.dry_run:
        for _, cmd, _, _ in todo:
            print(shlex.join(cmd))
        return 0

    failures = run_cells(todo, args.jobs, threads, len(cells), len(cells) - len(todo))

    os.makedirs(out, exist_ok=True)
    rows = [csv_row(cell, base, args.config.format(mode=cell.mode), work_dir)
            for cell, _, work_dir, _ in plan]
    write_csv(osp.join(out, 'results.csv'), rows)
    curves = curves_of(rows)
    with open(osp.join(out, 'curves.json'), 'w') as f:
        json.dump(curves, f, indent=1)
    plots = args.plot if args.plot is not None else (
        ['heatmap'] if args.thresholds else ['curves'])
    finished = [r for r in rows if r['status'] in FINISHED]
    if finished and 'heatmap' in plots:
        plot_heatmaps(finished, osp.join(out, 'completed_epochs_heatmap.png'))
    if finished and 'curves' in plots:
        plot_loss_curves([c for c in curves if c['status'] in FINISHED],
                         osp.join(out, 'loss_curves.png'))
    argv = sys.argv[1:] if argv is None else argv
    log_invocation(osp.join(out, 'sweep.json'), dict(
        command=shlex.join(['python', 'tools/sweep.py', *argv]), cells=len(cells),
        ran=len(todo), failed=failures, jobs=args.jobs, threads_per_job=threads,
        finished_at=time.strftime('%Y-%m-%d %H:%M:%S'), wall_s=time.time() - started,
        machine=machine_info()))
    print(f'wrote {osp.join(out, "results.csv")} ({len(rows)} rows, {failures} failed runs)')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
