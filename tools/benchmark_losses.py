"""Forward+backward time and autograd memory of the sigmoid focal loss, ours vs torchvision
and mmdet's Python path, measured side by side in one run.

    .venv/bin/python tools/benchmark_losses.py --threads 1 --repeats 7 \
        --out results/benchmark_losses.md

Memory is the bytes autograd keeps between forward and backward (every tensor saved for
backward, each storage counted once, via ``torch.autograd.graph.saved_tensors_hooks``): the
part of a loss's footprint that lives through a training step. Time is the median wall time of
forward + backward; variants are interleaved round-robin so drift hits all of them alike.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from focal_plugin.functional import sigmoid_focal_loss

SIZES = {'retinanet (120000 x 80)': (120_000, 80), 'small (2000 x 80)': (2_000, 80)}


def torchvision_loss(x, t_float, t_int, gamma):
    from torchvision.ops import sigmoid_focal_loss as tv
    return tv(x, t_float, alpha=0.25, gamma=gamma, reduction='sum')


def mmdet_loss(x, t_float, t_int, gamma):
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    return py_sigmoid_focal_loss(x, t_float, gamma=gamma, alpha=0.25, reduction='sum')


def ours(stabilizer, hard):
    def run(x, t_float, t_int, gamma):
        return sigmoid_focal_loss(x, t_int if hard else t_float, 0.25, gamma, 'sum',
                                  stabilizer=stabilizer)
    return run


VARIANTS = {
    'torchvision': torchvision_loss,
    'mmdet py_sigmoid_focal_loss': mmdet_loss,
    'ours exact (bool one-hot targets, as StableFocalLoss)': ours('exact', True),
    'ours exact (float targets)': ours('exact', False),
    'ours epsilon': ours('epsilon', False),
    'ours none': ours('none', False),
}


def saved_bytes(fn, x, t_float, t_int, gamma) -> int:
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x, t_float, t_int, gamma)
    storages.pop(x.untyped_storage().data_ptr(), None)  # the input exists anyway
    return sum(storages.values())


def time_once(fn, x, t_float, t_int, gamma) -> float:
    x.grad = None
    start = time.perf_counter()
    fn(x, t_float, t_int, gamma).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description='focal loss fwd+bwd benchmark')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--gamma', type=float, default=2.0)
    parser.add_argument('--out', default=None, help='write the Markdown table here too')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    lines = [f'torch {torch.__version__}, {args.threads} thread(s), gamma={args.gamma}, '
             f'median of {args.repeats} fwd+bwd runs, CPU', '',
             '| size | variant | time (ms) | x torchvision | saved for backward (MB) '
             '| x torchvision |', '|---|---|---|---|---|---|']
    for size_name, (n, c) in SIZES.items():
        x = (torch.randn(n, c) * 3).requires_grad_(True)
        labels = torch.randint(0, c + 1, (n,))
        t_int = F.one_hot(labels, c + 1)[:, :c].bool()
        t_float = t_int.float()
        times = {name: [] for name in VARIANTS}
        for fn in VARIANTS.values():  # warm-up
            time_once(fn, x, t_float, t_int, args.gamma)
        for _ in range(args.repeats):
            for name, fn in VARIANTS.items():
                times[name].append(time_once(fn, x, t_float, t_int, args.gamma))
        base_t = statistics.median(times['torchvision'])
        base_m = saved_bytes(torchvision_loss, x, t_float, t_int, args.gamma)
        for name, fn in VARIANTS.items():
            med = statistics.median(times[name])
            mem = saved_bytes(fn, x, t_float, t_int, args.gamma)
            lines.append(f'| {size_name} | {name} | {med * 1e3:.1f} | {med / base_t:.2f} '
                         f'| {mem / 2**20:.1f} | {mem / base_m:.2f} |')
            print(lines[-1], flush=True)
    text = '\n'.join(lines)
    print('\n' + text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('# Focal loss benchmark\n\nCommand: `.venv/bin/python '
                    f'tools/benchmark_losses.py --threads {args.threads} '
                    f'--repeats {args.repeats} --out {args.out}`\n\n'
                    f'{text}\n')


if __name__ == '__main__':
    main()
