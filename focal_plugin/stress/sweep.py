"""A stress-test sweep from start to end: plan the cells, restore snapshots, run what is
not finished, and write the results (``tools/sweep.py`` is its command line); and the merge
of several sweeps into one grid (``tools/merge_sweeps.py``)."""
import json
import os
import os.path as osp
import shlex
import time

from .cells import FINISHED, Snapshot, is_finished, run_cells
from .figures import plot_heatmaps, plot_loss_curves
from .grid import MODES, build_cells, cell_command, config_stem, load_base_values
from .results import (
    csv_row,
    curves_of,
    log_invocation,
    machine_info,
    markdown,
    read_rows,
    write_csv,
)

__all__ = ['run_sweep', 'merge_sweeps']


def run_sweep(args, command: str, train_script: str) -> int:
    """Run (or resume) the sweep ``args`` describes (see ``tools/sweep.py --help``), write
    its CSV, curves, figures and invocation log; returns the number of failed runs.
    ``command``: how it was invoked (logged); ``train_script``: the ``tools/train.py`` that
    trains one cell."""
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
        plan.append((cell, cell_command(args, cell, base, work_dir, train_script), work_dir,
                     snapshot))
    todo = [item for item in plan if not is_finished(item[2])]
    print(f'{len(cells)} cells, {len(cells) - len(todo)} already finished, {len(todo)} to run '
          f'({args.jobs} at a time, {threads} thread(s) each); work root {work_root}'
          + (f'; {restored} restored from {args.snapshot_dir}' if restored else ''))
    if args.dry_run:
        for _, cmd, _, _ in todo:
            print(shlex.join(cmd))
        return 0

    failures = run_cells(todo, args.jobs, threads, len(cells), len(cells) - len(todo),
                         resume_hint=command, budget_s=getattr(args, 'budget_s', None),
                         stop_on_divergence=getattr(args, 'stop_on_divergence', False))

    os.makedirs(out, exist_ok=True)
    rows = [csv_row(cell, base, args.config.format(mode=cell.mode), work_dir)
            for cell, _, work_dir, _ in plan]
    write_csv(osp.join(out, 'results.csv'), rows)
    curves = curves_of(rows)
    with open(osp.join(out, 'curves.json'), 'w') as f:
        json.dump(curves, f, indent=1)
    plots = args.plot if args.plot is not None else (
        ['heatmap'] if args.thresholds else ['curves'])
    # cells cut short (a budget, a signal) are drawn too: their curves up to the stop
    finished = [r for r in rows if r['status'] in FINISHED + ('interrupted',)]
    if finished and 'heatmap' in plots:
        plot_heatmaps(finished, osp.join(out, 'completed_epochs_heatmap.png'))
    if finished and 'curves' in plots:
        plot_loss_curves([c for c in curves if c['status'] in FINISHED + ('interrupted',)],
                         osp.join(out, 'loss_curves.png'))
    log_invocation(osp.join(out, 'sweep.json'), dict(
        command=command, cells=len(cells),
        ran=len(todo), failed=failures, jobs=args.jobs, threads_per_job=threads,
        finished_at=time.strftime('%Y-%m-%d %H:%M:%S'), wall_s=time.time() - started,
        machine=machine_info()))
    print(f'wrote {osp.join(out, "results.csv")} ({len(rows)} rows, {failures} failed runs)')
    return failures


def merge_sweeps(csvs, out: str, command: str) -> str:
    """Merge the ``results.csv`` of several sweeps into ``out``: one CSV, the heatmaps and a
    Markdown table per loss mode; a cell found in several files is taken from the first.
    Returns the tables' text."""
    dropped = []
    rows = read_rows(csvs, dropped)
    for path, row in dropped:  # said, not silently kept
        print(f"duplicate cell dropped: {row['mode']} gamma {row['gamma']:g} TH "
              f"{row['threshold']} noise {row['noise']:g} seed {row['seed']} from {path} "
              '(the first file listing it wins)')
    if not rows:
        raise SystemExit('no finished cells in ' + ', '.join(csvs))
    os.makedirs(out, exist_ok=True)
    rows.sort(key=lambda r: (MODES.index(r['mode']), r['gamma'], r['threshold'],
                             r['noise'], r['seed']))
    write_csv(osp.join(out, 'results.csv'), rows)
    plot_heatmaps(rows, osp.join(out, 'completed_epochs_heatmap.png'))
    text = markdown(rows)
    with open(osp.join(out, 'tables.md'), 'w') as f:
        f.write(f'# Merged stress-test grid\n\nCommand: `{command}`\n\n{text}')
    print(text)
    print(f'{len(rows)} cells -> {out}/results.csv, completed_epochs_heatmap.png, tables.md')
    return text
