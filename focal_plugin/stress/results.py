"""What a sweep leaves behind: one CSV row per cell (the schema), the loss curves, the log of
each invocation (command, machine, wall time), and the merge of several sweeps' CSVs."""
import csv
import json
import os
import os.path as osp
import platform
import signal

from .cells import CELL_FILE, FINISHED, RECORD_FILE, read_json
from .grid import MODES

CSV_COLUMNS = [
    'mode', 'gamma', 'alpha', 'threshold', 'noise', 'seed', 'positive_fraction', 'max_epochs',
    'iters_per_epoch', 'status', 'completed_epochs', 'nonfinite_epoch', 'nonfinite_iter',
    'nonfinite_reason', 'final_train_loss', 'final_train_acc', 'val_accuracy', 'val_f1',
    'wall_s', 'config', 'work_dir', 'neg_logit_min', 'pos_logit_max'
]
# how read_rows turns the CSV's text back into values
NUMBERS = dict(gamma=float, alpha=float, threshold=int, noise=float, seed=int,
               positive_fraction=float, max_epochs=int, iters_per_epoch=int,
               completed_epochs=int, nonfinite_epoch=int, nonfinite_iter=int,
               final_train_loss=float, final_train_acc=float, val_accuracy=float,
               val_f1=float, wall_s=float, neg_logit_min=float, pos_logit_max=float)


STOPPED_BY_SIGNAL = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def csv_row(cell, base, config, work_dir):
    record = read_json(osp.join(work_dir, RECORD_FILE)) or {}
    meta = read_json(osp.join(work_dir, CELL_FILE)) or {}
    nonfinite = record.get('nonfinite') or {}
    val = record.get('val_metrics') or {}
    status = record.get('status', 'missing')
    # a trainer stopped by a signal (a budget, Ctrl-C) exits with 128 + the signal after
    # recording 'interrupted': cut short, not broken
    stopped = status == 'interrupted' and meta.get('returncode') in STOPPED_BY_SIGNAL
    if not stopped and (meta.get('returncode') not in (0, None)
                        or (meta and status not in FINISHED)):
        status = 'error'

    def last(key):
        values = record.get(key) or []
        return values[-1] if values else None

    def extreme(combine, key):
        values = [v for v in record.get(key) or [] if v is not None]
        return combine(values) if values else None

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
        # the run's most confident logits (vs the original loss's float32 break points)
        neg_logit_min=extreme(min, 'neg_logit_min'), pos_logit_max=extreme(max, 'pos_logit_max'),
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


def read_rows(paths, dropped=None):
    """The finished rows of several results.csv; a cell found in several files is taken from
    the first, and each later copy is appended to ``dropped`` (``(path, row)``) when given."""
    rows, seen = [], set()
    for path in paths:
        with open(path, newline='') as f:
            for raw in csv.DictReader(f):
                row = {k: (NUMBERS[k](float(v)) if k in NUMBERS and v != '' else
                           (None if v == '' else v)) for k, v in raw.items()}
                key = (row['mode'], row['gamma'], row['threshold'], row['noise'], row['seed'])
                if row['status'] not in FINISHED:
                    continue
                if key in seen:
                    if dropped is not None:
                        dropped.append((path, row))
                    continue
                seen.add(key)
                rows.append(row)
    return rows


def cell_text(row):
    if row['status'] == 'completed':
        return f"finite for {row['completed_epochs']} epochs"
    return (f"NaN at step {row['nonfinite_iter']} (epoch {row['nonfinite_epoch']})"
            if row['nonfinite_iter'] is not None else f"diverged, epoch {row['nonfinite_epoch']}")


def markdown(rows):
    lines = []
    thresholds = sorted({r['threshold'] for r in rows})
    fractions = {r['threshold']: r['positive_fraction'] for r in rows if r['positive_fraction']}
    for mode in [m for m in MODES if any(r['mode'] == m for r in rows)]:
        mine = [r for r in rows if r['mode'] == mode]
        failed = sum(r['status'] == 'diverged' for r in mine)
        lines += [f'### {mode}: {len(mine)} cells run, {failed} with a non-finite step', '',
                  '| gamma \\ TH (positive fraction) | ' + ' | '.join(
                      f'{t} ({fractions.get(t, 0):.0%})' for t in thresholds) + ' |',
                  '|---' * (len(thresholds) + 1) + '|']
        for gamma in sorted({r['gamma'] for r in mine}):
            cells = {r['threshold']: cell_text(r) for r in mine if r['gamma'] == gamma}
            lines.append(f'| {gamma:g} | ' + ' | '.join(cells.get(t, 'not run')
                                                         for t in thresholds) + ' |')
        lines.append('')
    return '\n'.join(lines)
