"""The detection study's table and learning curves (``tools/detection_study.py collect``).

Reads each job's MMEngine ``<timestamp>/vis_data/scalars.json`` (all legs of a resumed run,
the later leg winning for a repeated step), ``GradientSanitizerHook``'s report and the
driver's ``done.json``; writes ``<name>.csv`` / ``<name>.md`` (mean +- std over seeds) and
``<name>_curves.png`` (loss and bbox mAP against iteration, seed range shaded).
"""
import csv
import glob
import json
import math
import os
import os.path as osp
import statistics

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

METRICS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_s')


def read_job(work_dir: str, val_interval: int) -> dict:
    """MMEngine logs a validation of an iteration-based loop with ``step`` 0: its iteration is
    the first multiple of ``val_interval`` at or after the training row before it.

    A validation after a NaN training loss is of a model with non-finite weights (the study's
    hook only warns, so non-finite updates are applied, as plain mmdet would): it detects
    nothing, mmdet's ``CocoMetric`` logs "The testing results of the whole dataset is empty"
    and returns no metric, and MMEngine writes the *previous* evaluation's values again. Such
    a validation counts as what the model scored: 0 (listed in ``dead_evals``)."""
    train, val, dead = {}, {}, []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        last = 0
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if 'loss' in row:
                    last = row['step']
                    train[last] = float(row['loss'])
                if 'coco/bbox_mAP' in row:
                    at = -(-last // val_interval) * val_interval
                    val[at] = {k: row[f'coco/{k}'] for k in METRICS}
                    if not math.isfinite(train.get(last, 0.0)):  # stale: see above
                        val[at] = {k: 0.0 for k in METRICS}
                        dead.append(at)
    report_path = osp.join(work_dir, 'gradient_sanitizer_report.json')
    report = json.load(open(report_path)) if osp.exists(report_path) else {}
    counters = report.get('counters', {})
    done_path = osp.join(work_dir, 'done.json')
    done = json.load(open(done_path)) if osp.exists(done_path) else None
    return dict(train=sorted(train.items()), val=sorted(val.items()), done=done,
                dead_evals=sorted(set(dead)),
                events=counters.get('events', 0),
                first_event=(report.get('first_event') or {}).get('iter'))


def _mean_std(values):
    if not values or not all(math.isfinite(v) for v in values):  # a NaN loss: a dead run
        return float('nan'), float('nan')
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(variant: str, jobs: dict) -> dict:
    done = {seed: job for seed, job in jobs.items() if job['done']}
    row = dict(variant=variant, seeds=len(done), seeds_started=len(jobs))
    for metric in METRICS:
        mean, std = _mean_std([job['val'][-1][1][metric] for job in done.values() if job['val']])
        row[f'{metric}_mean'], row[f'{metric}_std'] = round(mean, 4), round(std, 4)
    row['final_loss_mean'] = round(_mean_std(
        [job['train'][-1][1] for job in done.values() if job['train']])[0], 4)
    wall = _mean_std([job['done']['wall_s'] for job in done.values()])[0]
    row['wall_s_mean'] = round(wall) if done else ''
    row['non_finite_updates'] = sum(job['events'] for job in jobs.values())
    row['seeds_detecting_nothing_at_end'] = sum(
        1 for job in done.values() if job['val'] and job['val'][-1][0] in job['dead_evals'])
    firsts = [job['first_event'] for job in jobs.values() if job['first_event'] is not None]
    row['first_non_finite_iter'] = min(firsts) if firsts else ''
    return row


def _markdown(rows) -> str:
    rows = [r for r in rows if r['seeds']]  # running jobs are in the CSV and the curves
    lines = ['| variant | seeds | bbox mAP | AP50 | AP small | final loss | wall time / run | '
             'non-finite updates, all seeds (first iter) |', '|---|---|---|---|---|---|---|---|']
    def pm(r, m):
        return f"{r[f'{m}_mean']:.3f} +- {r[f'{m}_std']:.3f}"

    for r in rows:
        first = f" ({r['first_non_finite_iter']})" if r['first_non_finite_iter'] != '' else ''
        lines.append(f"| {r['variant']} | {r['seeds']} | {pm(r, 'bbox_mAP')} | "
                     f"{pm(r, 'bbox_mAP_50')} | "
                     f"{pm(r, 'bbox_mAP_s')} | {r['final_loss_mean']:.3f} | {r['wall_s_mean']} s | "
                     f"{r['non_finite_updates']}{first} |")
    lines.append('')
    lines.append("bbox mAP, AP50, AP small: the last evaluation's. A run whose weights became "
                 'non-finite detects nothing: its later evaluations count as 0 (mmdet returns '
                 'no metric there and MMEngine repeats the previous value in `scalars.json`; '
                 '`tools/detection_tables.py` `read_job`).')
    return '\n'.join(lines) + '\n'


def _band(ax, series, label):
    """Mean line and min-max band of several (x, y) series on their common x values."""
    if not series:
        return
    common = sorted(set.intersection(*[set(x for x, _ in s) for s in series]))
    if not common:
        return
    ys = [[dict(s)[x] for s in series] for x in common]
    line, = ax.plot(common, [statistics.mean(y) for y in ys], label=label)
    if len(series) > 1:
        ax.fill_between(common, [min(y) for y in ys], [max(y) for y in ys],
                        color=line.get_color(), alpha=0.2)


def plot(groups: dict, path: str) -> None:
    archs = sorted({v.split('/')[0] for v in groups})
    fig, axes = plt.subplots(len(archs), 2, figsize=(11, 3.6 * len(archs)), squeeze=False)
    for row, arch in zip(axes, archs):
        for variant, jobs in groups.items():
            if not variant.startswith(arch + '/'):
                continue
            name = variant.split('/', 1)[1]
            # finished seeds only (a running one would cut the band at its iteration)
            jobs = {s: j for s, j in jobs.items() if j['done']} or jobs
            _band(row[0], [j['train'] for j in jobs.values() if j['train']], name)
            _band(row[1], [[(x, m['bbox_mAP']) for x, m in j['val']]
                           for j in jobs.values() if j['val']], name)
            for j in jobs.values():
                if j['first_event'] is not None:
                    row[0].axvline(j['first_event'], color='red', alpha=0.4, linestyle=':')
        row[0].set(title=f'{arch}: training loss', xlabel='iteration', yscale='log')
        row[1].set(title=f'{arch}: bbox mAP (val)', xlabel='iteration')
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect(roots, out: str, configs: dict, name: str = 'study',
            val_interval: int = 250) -> str:
    groups = {}
    for root in roots:
        for variant in configs:
            for seed_dir in sorted(glob.glob(osp.join(root, variant, 'seed*'))):
                groups.setdefault(variant, {})[osp.basename(seed_dir)] = read_job(
                    seed_dir, val_interval)
    if not groups:
        raise SystemExit(f'no jobs under {roots}')
    os.makedirs(out, exist_ok=True)
    rows = [summarize(v, jobs) for v, jobs in groups.items()]
    with open(osp.join(out, f'{name}.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = _markdown(rows)
    with open(osp.join(out, f'{name}.md'), 'w') as f:
        f.write(text)
    plot(groups, osp.join(out, f'{name}_curves.png'))
    per_iter = {v: {s: [(x, m['bbox_mAP']) for x, m in j['val']] for s, j in jobs.items()}
                for v, jobs in groups.items()}
    with open(osp.join(out, f'{name}_map_vs_iter.json'), 'w') as f:
        json.dump(per_iter, f, indent=1)
    print(text)
    return text
