"""The detection study (results/detection/): RetinaNet and GFL on the shapes set, stock mmdet
losses vs the stable ones, several seeds, run to a plateau.

    # the schedule-length measurement: stock RetinaNet (gamma 2), constant LR after warm-up
    python tools/detection_study.py run --variants retinanet/mmdet-focal-g2 --seeds 0 \\
        --iters 4000 --val-interval 250 --lr-drop none --root work_dirs/detection/plateau
    # the study: 8 variants x 3 seeds, 2 jobs at a time with 1 thread each
    python tools/detection_study.py run --iters 3000 --val-interval 250 --lr-drop 0.8 \\
        --root work_dirs/detection/study
    python tools/detection_study.py collect work_dirs/detection/study \\
        --out work_dirs/detection/results --name study

``run`` is resumable: a job with ``done.json`` in its work dir is skipped, a job with a
checkpoint continues from it (``tools/train.py --resume``), anything else starts afresh. Each
job is one ``tools/train.py`` process (its output appended to ``train.log`` in the work dir)
with the schedule, seed and ``randomness.deterministic=True`` given as ``--cfg-options``; the
fused-kernel backend is pinned (``FOCAL_PLUGIN_FUSED``, default ``compile``: compiled at first
use, blocking), so the same seed gives the same numbers whatever the machine's speed.
``collect`` writes the table (CSV, Markdown) and learning curves (PNG) over seeds.
"""
import argparse
import json
import os
import os.path as osp
import shlex
import subprocess
import sys
import time

from focal_plugin.cli import HelpFormatter
from focal_plugin.stress.cells import read_json

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {  # variant -> config file (only loss_cls differs within an architecture)
    'retinanet/mmdet-focal-g2':
        'configs/retinanet/retinanet_r18_fpn_shapes-cpu_mmdet-focal-g2.py',
    'retinanet/stable-focal-g2':
        'configs/retinanet/retinanet_r18_fpn_shapes-cpu_stable-exact-g2.py',
    'retinanet/mmdet-focal-g0.5':
        'configs/retinanet/retinanet_r18_fpn_shapes-cpu_mmdet-focal-g0.5.py',
    'retinanet/stable-focal-g0.5':
        'configs/retinanet/retinanet_r18_fpn_shapes-cpu_stable-exact-g0.5.py',
    'gfl/mmdet-qfl-b2': 'configs/gfl/gfl_r18_fpn_shapes-cpu_mmdet-qfl-b2.py',
    'gfl/stable-qfl-b2': 'configs/gfl/gfl_r18_fpn_shapes-cpu_stable-qfl-b2.py',
    'gfl/mmdet-qfl-b0.5': 'configs/gfl/gfl_r18_fpn_shapes-cpu_mmdet-qfl-b0.5.py',
    'gfl/stable-qfl-b0.5': 'configs/gfl/gfl_r18_fpn_shapes-cpu_stable-qfl-b0.5.py',
}
DONE = 'done.json'


def schedule_options(iters: int, val_interval: int, lr_drop, seed: int) -> list:
    """--cfg-options for the study's schedule: ``iters`` iterations, validation and a
    checkpoint (the last one kept, for resuming) every ``val_interval``, the LR divided by 10
    at ``lr_drop * iters`` (None: constant after the warm-up), and the seed."""
    drop = iters + 1 if lr_drop is None else int(round(lr_drop * iters))
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={val_interval}',
            f'param_scheduler.1.end={iters}', f'param_scheduler.1.milestones=[{drop}]',
            f'default_hooks.checkpoint.interval={val_interval}',
            'default_hooks.checkpoint.max_keep_ckpts=1', f'randomness.seed={seed}',
            'randomness.deterministic=True']


def job_command(variant: str, seed: int, work_dir: str, args) -> list:
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), osp.join(ROOT, CONFIGS[variant]),
           '--work-dir', work_dir, '--cfg-options',
           *schedule_options(args.iters, args.val_interval, args.lr_drop, seed)]
    if osp.exists(osp.join(work_dir, 'last_checkpoint')):
        cmd.append('--resume')
    return cmd


class Job:
    def __init__(self, variant: str, seed: int, root: str, args):
        self.variant, self.seed, self.args = variant, seed, args
        self.work_dir = osp.join(root, variant, f'seed{seed}')
        self.proc = None
        self.started = 0.0

    @property
    def name(self):
        return f'{self.variant} seed {self.seed}'

    def start(self, threads: int, backend: str) -> None:
        os.makedirs(self.work_dir, exist_ok=True)
        cmd = job_command(self.variant, self.seed, self.work_dir, self.args)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   FOCAL_PLUGIN_FUSED=backend, PYTHONUNBUFFERED='1')
        self.log = open(osp.join(self.work_dir, 'train.log'), 'a')
        self.log.write(f'\n$ {shlex.join(cmd)}\n')
        self.log.flush()
        self.cmd = cmd
        self.started = time.time()
        # in the data root's parent (repository root): data/shapes is generated there once
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.args.cwd, env=env)

    def finish(self, backend: str, threads: int) -> int:
        rc = self.proc.returncode
        self.log.close()
        legs = (read_json(osp.join(self.work_dir, 'legs.json')) or [])
        legs.append(dict(command=shlex.join(self.cmd), returncode=rc,
                         wall_s=round(time.time() - self.started, 1), threads=threads,
                         fused_backend=backend, finished_at=time.strftime('%Y-%m-%d %H:%M:%S')))
        with open(osp.join(self.work_dir, 'legs.json'), 'w') as f:
            json.dump(legs, f, indent=1)
        if rc == 0:
            with open(osp.join(self.work_dir, DONE), 'w') as f:
                json.dump(dict(variant=self.variant, seed=self.seed, iters=self.args.iters,
                               wall_s=sum(leg['wall_s'] for leg in legs)), f, indent=1)
        return rc


def run(args) -> int:
    variants = args.variants or list(CONFIGS)
    unknown = [v for v in variants if v not in CONFIGS]
    if unknown:
        raise SystemExit(f'unknown variants {unknown}; known: {list(CONFIGS)}')
    jobs = [Job(v, s, args.root, args) for s in args.seeds for v in variants]
    todo = [j for j in jobs if not osp.exists(osp.join(j.work_dir, DONE))]
    print(f'{len(jobs)} jobs, {len(jobs) - len(todo)} done, {len(todo)} to run, {args.jobs} at a '
          f'time with {args.threads} thread(s) each; FOCAL_PLUGIN_FUSED={args.backend}',
          flush=True)
    running, failed, t0 = [], 0, time.time()
    while todo or running:
        while todo and len(running) < args.jobs:
            job = todo.pop(0)
            job.start(args.threads, args.backend)
            print(f'[{time.time() - t0:7.0f} s] start  {job.name} -> {job.work_dir}', flush=True)
            running.append(job)
        time.sleep(2)
        for job in [j for j in running if j.proc.poll() is not None]:
            running.remove(job)
            rc = job.finish(args.backend, args.threads)
            failed += rc != 0
            print(f'[{time.time() - t0:7.0f} s] {"done  " if rc == 0 else "FAILED"} {job.name} '
                  f'(exit {rc}, {time.time() - job.started:.0f} s; log {job.work_dir}/train.log)',
                  flush=True)
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    r = sub.add_parser('run', help='train the variants x seeds (resumable)',
                       description='Train the variants x seeds (resumable).',
                       formatter_class=HelpFormatter)
    r.add_argument('--variants', nargs='+', help=f'default: all of {list(CONFIGS)}')
    r.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2], help='training seeds')
    r.add_argument('--iters', type=int, default=3000,
                   help='training iterations per job (the plateau length, '
                        'results/detection/plateau.md)')
    r.add_argument('--val-interval', type=int, default=250,
                   help='iterations between two validations (bbox mAP)')
    r.add_argument('--lr-drop', type=lambda s: None if s == 'none' else float(s), default=0.8,
                   help="fraction of --iters where the LR drops 10x, or 'none'")
    r.add_argument('--jobs', type=int, default=2, help='jobs (processes) run at a time')
    r.add_argument('--threads', type=int, default=1, help='torch threads per job')
    r.add_argument('--backend', default='compile', help='FOCAL_PLUGIN_FUSED for the jobs')
    r.add_argument('--root', default='work_dirs/detection/study',
                   help='folder of the jobs\' work dirs (<root>/<variant>/seed<k>)')
    r.add_argument('--cwd', default=ROOT, help='where the jobs run (data/shapes lives there)')
    c = sub.add_parser('collect', help='table and curves over seeds',
                       description='Table and curves over seeds.', formatter_class=HelpFormatter)
    c.add_argument('roots', nargs='+', help='--root folders of run')
    c.add_argument('--out', default='work_dirs/detection/results',
                   help='folder for the table (CSV, Markdown), the curves (PNG) and the '
                   'mAP-vs-iteration JSON')
    c.add_argument('--name', default='study', help='file name stem of the table and figure')
    c.add_argument('--val-interval', type=int, default=250, help='as given to run')
    args = parser.parse_args(argv)
    if args.command == 'run':
        args.root = osp.abspath(args.root)
        return 1 if run(args) else 0
    from detection_tables import collect  # noqa: E402  (matplotlib only when collecting)
    collect(args.roots, args.out, CONFIGS, args.name, args.val_interval)
    return 0


if __name__ == '__main__':
    sys.exit(main())
