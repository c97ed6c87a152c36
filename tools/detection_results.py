"""Collect the shapes RetinaNet runs into a table (CSV + Markdown) and a loss-curve figure.

    .venv/bin/python tools/detection_results.py work_dirs/shapes/* --out results/detection

Each argument is a ``--work-dir`` of ``tools/train.py``. Reads MMEngine's
``<timestamp>/vis_data/scalars.json`` (training losses, COCO metrics) and the
``gradient_sanitizer_report.json`` of ``GradientSanitizerHook`` (non-finite updates).
"""
import argparse
import csv
import glob
import json
import math
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from focal_plugin.cli import HelpFormatter  # noqa: E402


def read_run(work_dir: str) -> dict:
    scalars = sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not scalars:
        raise SystemExit(f'{work_dir}: no */vis_data/scalars.json (did the run start?)')
    iters, losses, metrics = [], [], {}
    with open(scalars[-1]) as f:
        for line in f:
            row = json.loads(line)
            if 'loss' in row and 'iter' in row:
                iters.append(row['iter'])
                losses.append(float(row['loss']))
            metrics.update({k: v for k, v in row.items() if k.startswith('coco/')})
    report_path = os.path.join(work_dir, 'gradient_sanitizer_report.json')
    counters, first = {}, None
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
        counters = report.get('counters', {})
        first = (report.get('first_event') or {}).get('iteration')
    return dict(name=os.path.basename(os.path.normpath(work_dir)), iters=iters,
                losses=losses, metrics=metrics, counters=counters, first_event_iter=first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('work_dirs', nargs='+',
                        help='--work-dir folders of tools/train.py runs (one table row each; '
                        'arguments that are not folders are skipped)')
    parser.add_argument('--out', default='results/detection',
                        help='folder for the table (CSV, Markdown) and the loss-curve figure')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = [read_run(d) for d in args.work_dirs if os.path.isdir(d)]

    fields = ['variant', 'bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l',
              'final_loss', 'non_finite_updates', 'first_non_finite_iter']
    rows = []
    for run in runs:
        m = run['metrics']
        events = run['counters'].get('events', run['counters'].get('warned', 0))
        rows.append(dict(
            variant=run['name'],
            **{k: m.get(f'coco/{k}', float('nan')) for k in fields[1:6]},
            final_loss=run['losses'][-1] if run['losses'] else float('nan'),
            non_finite_updates=events, first_non_finite_iter=run['first_event_iter']))
    with open(os.path.join(args.out, 'shapes_retinanet.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.out, 'shapes_retinanet.md'), 'w') as f:
        f.write('| ' + ' | '.join(fields) + ' |\n|' + '---|' * len(fields) + '\n')
        for row in rows:
            f.write('| ' + ' | '.join(
                f'{v:.3f}' if isinstance(v, float) else str(v) for v in row.values()) + ' |\n')

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        ax.plot(run['iters'], run['losses'], label=run['name'])
        bad = [i for i, v in zip(run['iters'], run['losses']) if not math.isfinite(v)]
        if bad:
            ax.plot(bad[:1], [ax.get_ylim()[1]], 'x', color='red', markersize=10)
    ax.set_xlabel('iteration')
    ax.set_ylabel('training loss (cls + bbox)')
    ax.set_title('RetinaNet R18/2 on shapes, 2-core CPU')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'shapes_retinanet_loss.png'), dpi=120)
    print(open(os.path.join(args.out, 'shapes_retinanet.md')).read())


if __name__ == '__main__':
    main()
