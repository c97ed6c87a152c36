"""Overhead of GradientSanitizerHook on the training step of a small detector (CPU).

Three variants of the same step, on the same model and data, in one process:

* ``no hook``        ``model.train_step(batch, optim_wrapper)``, a plain ``OptimWrapper``;
* ``hook``           the same with GradientSanitizerHook(interval=1) installed exactly as in a
                     run (its ``before_train_iter``/``after_train_iter`` and the audited step);
* ``detect_anomaly`` the plain step under ``torch.autograd.detect_anomaly()``.

Variants are interleaved step by step, in a shuffled order each round, so that drift (thermal,
other processes on shared cores) hits all of them alike. Each step is timed twice: thread CPU
time (what the step costs; insensitive to the process being descheduled on a shared machine)
and wall-clock time. Reported: median step times, the overhead vs ``no hook`` as the median
over rounds of the paired ratio with a bootstrap 95% interval; the hook's own CPU time per
step, measured inside the 'hook' steps (its iteration methods plus its patched ``step`` and
``update_params`` minus the originals they call), which is the precise figure; and the cost of
the audit itself (the fused check on this model's gradients, timed in isolation).

    OMP_NUM_THREADS=1 python tools/benchmark_hook.py --rounds 200 --out results/hook_overhead.md
    OMP_NUM_THREADS=1 python tools/benchmark_hook.py --rounds 60 --image-size 256 \
        --out results/hook_overhead.md --append
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid

os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

from focal_plugin.cli import HelpFormatter  # noqa: E402

VARIANTS = ('no hook', 'hook', 'detect_anomaly')
# below this many rounds the medians are anecdotes and the bootstrap of a median over a handful
# of ratios collapses onto one or two of them (a zero-width "interval"): not reported as one
MIN_ROUNDS = 10


def build(args, work_dir):
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner

    import focal_plugin  # noqa: F401
    from focal_plugin.hooks import GradientSanitizerHook
    from focal_plugin.testing import SyntheticBoxes, detector_runner_kwargs, tiny_retinanet_cfg

    # a healthy run (stock gamma=2): the overhead of interest is the one paid when nothing
    # goes wrong; detect_anomaly would abort on the first NaN anyway
    cfg = tiny_retinanet_cfg(base_channels=args.base_channels,
                             head_channels=args.head_channels,
                             stacked_convs=args.stacked_convs, gamma=args.gamma)
    kwargs = detector_runner_kwargs(cfg, SyntheticBoxes(16, image_size=args.image_size),
                                    max_iters=10**6,
                                    batch_size=args.batch_size)
    runner = Runner(work_dir=work_dir, experiment_name=f'bench_{uuid.uuid4().hex[:8]}',
                    default_hooks=dict(logger=None, checkpoint=None), log_level='WARNING',
                    **kwargs)
    # what Runner.train() and the loop do before the first step
    runner.model.init_weights()
    runner.model.train()  # (ResNet's norm_eval/frozen_stages apply in train())
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.optim_wrapper.initialize_count_status(runner.model, 0, 10**6)
    # the hook patches runner.optim_wrapper; the other variants use a second, plain wrapper
    # around the same torch optimizer
    hook = GradientSanitizerHook(policy='skip', interval=1, report_file=None)
    probe = HookProbe()
    wrapper = runner.optim_wrapper
    probe.wrap(wrapper, 'step', 'step_inner')  # the hook will wrap these timed originals
    probe.wrap(wrapper, 'update_params', 'update_inner')
    hook.before_train(runner)
    probe.wrap(wrapper, 'step', 'step_outer')
    probe.wrap(wrapper, 'update_params', 'update_outer')
    probe.wrap(hook, 'before_train_iter', 'before')
    probe.wrap(hook, 'after_train_iter', 'after')
    plain = OptimWrapper(optimizer=runner.optim_wrapper.optimizer)
    batches = [batch for _, batch in zip(range(4), runner.train_dataloader)]
    return runner, hook, plain, batches, probe


class HookProbe:
    """Thread CPU time spent in the hook's own code during 'hook' steps: its iteration
    methods, plus (patched step - original step) and (patched update_params - original)."""

    def __init__(self):
        self.totals: dict[str, float] = {}
        self.per_step: list[float] = []

    def wrap(self, obj, method, key):
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.totals[key] = self.totals.get(key, 0.0) + time.thread_time() - start
        setattr(obj, method, timed)

    def end_step(self):
        t = self.totals
        own = (t.get('before', 0) + t.get('after', 0)
               + t.get('step_outer', 0) - t.get('step_inner', 0)
               + t.get('update_outer', 0) - t.get('update_inner', 0))
        self.per_step.append(own)
        self.totals = {}


def make_steps(runner, hook, plain):
    model = runner.model

    def no_hook(batch, index):
        model.train_step(batch, optim_wrapper=plain)

    def with_hook(batch, index):
        hook.before_train_iter(runner, index, batch)
        outputs = model.train_step(batch, optim_wrapper=runner.optim_wrapper)
        hook.after_train_iter(runner, index, batch, outputs)

    def anomaly(batch, index):
        with torch.autograd.detect_anomaly(check_nan=True):
            model.train_step(batch, optim_wrapper=plain)

    return {'no hook': no_hook, 'hook': with_hook, 'detect_anomaly': anomaly}


def paired_overhead(variant, base, reps=2000, seed=0):
    """Median over rounds of variant/base - 1 (each round times both back to back, so slow
    drift cancels), with a bootstrap 95% interval over rounds."""
    ratios = [v / b - 1 for v, b in zip(variant, base)]
    rng = random.Random(seed)
    boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(reps))
    return statistics.median(ratios), boot[int(0.025 * reps)], boot[int(0.975 * reps)]


def zero_width(low, high) -> bool:
    """The interval has no width at the table's precision (0.01 %)."""
    return f'{100 * low:+.2f}' == f'{100 * high:+.2f}'


def interval_cell(low, high, rounds):
    """The 95% interval's table cell, or 'n/a' where there is none to speak of."""
    if rounds < MIN_ROUNDS or zero_width(low, high):
        return 'n/a'
    return f'{100 * low:+.2f} % .. {100 * high:+.2f} %'


def sample_warning(rounds, no_width):
    """The warning line above the table when its overheads do not mean much, else None."""
    if rounds < MIN_ROUNDS:
        why = (f'only {rounds} round(s): too few for the overheads to mean anything, and no '
               'confidence interval can be estimated from so few (shown as n/a)')
    elif no_width:
        why = (f'the bootstrap interval over {rounds} rounds has zero width (the paired ratios '
               'are nearly all equal, e.g. at the timer\'s resolution): it is no confidence '
               'interval (shown as n/a)')
    else:
        return None
    return (f'**WARNING: sample too small** - {why}. For a meaningful figure run more rounds '
            f'(--rounds 100 or more; the default is 150).')


def audit_cost(runner, hook, reps=200):
    """CPU seconds per audit of this model's gradients and loss, the way the hook does it
    (fused norm pass plus one host sync), timed on its own."""
    from focal_plugin.hooks.finite_check import any_nonfinite, floating_tensors
    wrapper = runner.optim_wrapper
    params = [p for g in wrapper.optimizer.param_groups for p in g['params']]
    for p in params:  # gradients with this model's shapes
        p.grad = torch.randn_like(p)
    grads = floating_tensors(p.grad for p in params)
    loss = [torch.tensor(1.0)]
    any_nonfinite([grads, loss])
    start = time.thread_time()
    for _ in range(reps):
        any_nonfinite([grads, loss])
    elapsed = (time.thread_time() - start) / reps
    for p in params:
        p.grad = None
    return elapsed, sum(g.numel() for g in grads), len(grads)


def audit_cost_cold(runner, reps=60):
    """Median CPU ms of reading every gradient after evicting the caches (as right after a
    real backward, where the hook runs), for the hook's check and two alternatives."""
    from focal_plugin.hooks.finite_check import any_nonfinite
    params = [p for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']]
    grads = [torch.randn_like(p) for p in params]
    loss = [torch.tensor(1.0)]
    evict = torch.empty(64 * 2**20 // 4)  # 64 MB, more than any cache level here
    candidates = {
        "the hook's check (foreach L2 norm, 1 sync)": lambda: any_nonfinite([grads, loss]),
        'per-tensor sums': lambda: bool(torch.isfinite(torch.stack(
            [g.sum() for g in grads + loss])).all()),
        'foreach L1 norm': lambda: bool(torch.isfinite(torch.stack(
            torch._foreach_norm(grads + loss, 1))).all()),
    }
    out = {}
    for name, check in candidates.items():
        samples = []
        for _ in range(reps):
            evict.fill_(1.0)
            start = time.thread_time()
            check()
            samples.append(time.thread_time() - start)
        out[name] = statistics.median(samples) * 1e3
    return out


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive int, got {text!r}')
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--rounds', type=positive_int, default=150,
                        help='timed rounds (each runs every variant, in a shuffled order); the '
                        'overheads and their intervals are over rounds, so use 100 or more')
    parser.add_argument('--block', type=int, default=1, help='steps per variant per round')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed steps per variant before the rounds')
    parser.add_argument('--batch-size', type=int, default=2, help='images per step')
    parser.add_argument('--image-size', type=int, default=64,
                        help='side of the square synthetic images, in pixels')
    parser.add_argument('--base-channels', type=int, default=16,
                        help='base channels of the ResNet-18 backbone')
    parser.add_argument('--head-channels', type=int, default=32,
                        help='channels of the FPN and the RetinaNet head')
    parser.add_argument('--stacked-convs', type=int, default=2,
                        help='convs per branch of the RetinaNet head')
    parser.add_argument('--gamma', type=float, default=2.0, help="FocalLoss gamma")
    parser.add_argument('--out', help='also write the Markdown table to this file')
    parser.add_argument('--append', action='store_true',
                        help='append to --out (one section per setting) instead of replacing')
    parser.add_argument('--audit-only', action='store_true',
                        help='only time the gradient read with cold caches (and alternatives)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.audit_only:
        with tempfile.TemporaryDirectory() as work_dir:
            runner = build(args, work_dir)[0]
            print('| check over all gradients, caches evicted first | median CPU ms |')
            print('| --- | --- |')
            for name, ms in audit_cost_cold(runner).items():
                print(f'| {name} | {ms:.3f} |')
        return

    with tempfile.TemporaryDirectory() as work_dir:
        runner, hook, plain, batches, probe = build(args, work_dir)
        steps = make_steps(runner, hook, plain)
        times = {name: [] for name in VARIANTS}  # thread CPU time per step
        walls = {name: [] for name in VARIANTS}  # wall-clock time per step
        counter = 0
        for name in VARIANTS:  # warm-up, not timed
            for _ in range(args.warmup):
                steps[name](batches[counter % len(batches)], counter)
                counter += 1
        probe.totals = {}
        order_rng = random.Random(0)
        for _ in range(args.rounds):
            order = list(VARIANTS)
            order_rng.shuffle(order)
            for name in order:
                start, start_cpu = time.perf_counter(), time.thread_time()
                for _ in range(args.block):
                    steps[name](batches[counter % len(batches)], counter)
                    counter += 1
                times[name].append((time.thread_time() - start_cpu) / args.block)
                walls[name].append((time.perf_counter() - start) / args.block)
                if name == 'hook':
                    probe.end_step()
                else:
                    probe.totals = {}
        per_audit, numel, tensors = audit_cost(runner, hook)
        events = hook.counters['events']
        hook.after_train(runner)

    base = statistics.median(times['no hook'])
    params = sum(p.numel() for p in runner.model.parameters())
    lines = [
        '| variant | median step, CPU time (ms) | overhead vs no hook: CPU time | 95% interval '
        '| median step, wall (ms) | overhead: wall | 95% interval |',
        '| --- | --- | --- | --- | --- | --- | --- |',
        f"| no hook | {base * 1e3:.1f} | - | - | {statistics.median(walls['no hook']) * 1e3:.1f} "
        '| - | - |',
    ]
    no_width = False
    for name in VARIANTS[1:]:
        cells = [name]
        for series in (times, walls):
            median = statistics.median(series[name])
            overhead, low, high = paired_overhead(series[name], series['no hook'])
            no_width |= zero_width(low, high)
            cells += [f'{median * 1e3:.1f}', f'{100 * overhead:+.2f} %',
                      interval_cell(low, high, args.rounds)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    warning = sample_warning(args.rounds, no_width)
    if warning:
        lines = [warning, ''] + lines
    own = statistics.median(probe.per_step) / args.block
    lines += [
        '',
        f"**Hook's own CPU time per step** (measured inside the 'hook' steps: its "
        'before/after_train_iter plus the patched step and update_params minus the originals): '
        f'{own * 1e3:.3f} ms = **{100 * own / base:.2f} %** of the median no-hook step.',
        '',
        f'Audit alone (fused norm pass + 1 sync over {tensors} gradient tensors, {numel:,} '
        f'values, and the loss): {per_audit * 1e3:.3f} ms CPU time = '
        f'{100 * per_audit / base:.2f} % of the median step.',
        '',
        f'Setup: mmdet RetinaNet (retinanet_r50_fpn_1x_coco.py, ResNet-18 with '
        f'{args.base_channels} base channels, FPN/head {args.head_channels} channels, '
        f'{args.stacked_convs} stacked convs, FocalLoss gamma={args.gamma}, {params:,} '
        f'parameters), batch '
        f'{args.batch_size} x 3x{args.image_size}x{args.image_size}, CPU, '
        f'torch {torch.__version__}, '
        f'{torch.get_num_threads()} thread; {args.rounds} rounds x {args.block} step(s) per '
        f'variant, shuffled order per round; hook policy=skip interval=1 '
        f'({events} events during the run).',
    ]
    table = '\n'.join(lines)
    print(table)
    if args.out:
        command = 'OMP_NUM_THREADS=1 python ' + ' '.join(sys.argv)
        fresh = not (args.append and os.path.exists(args.out))
        with open(args.out, 'w' if fresh else 'a') as f:
            if fresh:
                f.write('# GradientSanitizerHook overhead\n')
            f.write(f'\n## {args.batch_size} x 3x{args.image_size}x{args.image_size} images\n\n'
                    f'Produced by:\n\n```\n{command}\n```\n\n{table}\n')


if __name__ == '__main__':
    main()
