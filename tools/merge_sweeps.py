"""Merge the ``results.csv`` of several ``tools/sweep.py`` runs into one grid: a CSV, the
completed-epochs heatmaps (one panel per loss mode) and a Markdown table per mode.

    .venv/bin/python tools/merge_sweeps.py results/stress/*/results.csv \\
        results/stress/*/*/results.csv --out results/stress/mnist_binary_cpu_merged

A cell (mode, gamma, threshold, noise, seed) found in several files is taken from the first.
"""
from __future__ import annotations

import argparse
import csv
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import sweep  # noqa: E402  (tools/sweep.py: the CSV format and the heatmap)

NUMBERS = dict(gamma=float, alpha=float, threshold=int, noise=float, seed=int,
               positive_fraction=float, max_epochs=int, iters_per_epoch=int,
               completed_epochs=int, nonfinite_epoch=int, nonfinite_iter=int,
               final_train_loss=float, final_train_acc=float, val_accuracy=float,
               val_f1=float, wall_s=float)


def read_rows(paths):
    rows, seen = [], set()
    for path in paths:
        with open(path, newline='') as f:
            for raw in csv.DictReader(f):
                row = {k: (NUMBERS[k](float(v)) if k in NUMBERS and v != '' else
                           (None if v == '' else v)) for k, v in raw.items()}
                key = (row['mode'], row['gamma'], row['threshold'], row['noise'], row['seed'])
                if key in seen or row['status'] not in sweep.FINISHED:
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
    for mode in [m for m in sweep.MODES if any(r['mode'] == m for r in rows)]:
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('csvs', nargs='+', help='results.csv files of tools/sweep.py')
    parser.add_argument('--out', required=True, help='directory for the merged outputs')
    args = parser.parse_args(argv)
    rows = read_rows(args.csvs)
    if not rows:
        raise SystemExit('no finished cells in ' + ', '.join(args.csvs))
    os.makedirs(args.out, exist_ok=True)
    rows.sort(key=lambda r: (sweep.MODES.index(r['mode']), r['gamma'], r['threshold'],
                             r['noise'], r['seed']))
    sweep.write_csv(osp.join(args.out, 'results.csv'), rows)
    sweep.plot_heatmaps(rows, osp.join(args.out, 'completed_epochs_heatmap.png'))
    text = markdown(rows)
    with open(osp.join(args.out, 'tables.md'), 'w') as f:
        f.write(f'# Merged stress-test grid\n\nCommand: `python tools/merge_sweeps.py '
                f"{' '.join(args.csvs)} --out {args.out}`\n\n{text}")
    print(text)
    print(f'{len(rows)} cells -> {args.out}/results.csv, completed_epochs_heatmap.png, tables.md')


if __name__ == '__main__':
    main()
