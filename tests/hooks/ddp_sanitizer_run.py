"""Training script for the 2-rank DDP tests; started by torchrun from
``test_gradient_sanitizer_ddp.py``. Each rank writes ``rank<r>.json`` and ``final_rank<r>.pt``.

It goes through MMEngine's own Runner with ``launcher='pytorch'`` and its
``MMDistributedDataParallel`` wrapper, with two CPU-host adjustments: mmengine's pytorch
launcher calls ``torch.cuda.set_device`` unconditionally (fails without a GPU), so the gloo
process group is initialised here first and the Runner then skips ``init_dist``; and
``device_ids=None`` because DDP of a CPU module takes no device ids.
"""
import argparse
import json
import os
import os.path as osp
import sys

import torch
import torch.distributed as torch_dist

SCENARIOS = {
    # NaN loss term on rank 1 only, outside the graph: rank 1's gradients stay finite, so only
    # the agreed verdict makes rank 0 skip too (otherwise the replicas silently diverge)
    'skip_rank1_loss': (dict(policy='skip'), {2: 'loss_detached_nan', 5: 'loss_detached_nan'}),
    # NaN gradient on rank 1: both ranks must raise at the same iteration (nobody hangs)
    'raise_rank1_grad': (dict(policy='raise'), {4: 'grad_nan'}),
    # stop decided from rank 1's loss: both ranks stop, rank 0 saves the last good state
    'stop_rank1_loss': (dict(policy='stop'), {3: 'loss_detached_nan'}),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--scenario', choices=sorted(SCENARIOS), required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch_dist.init_process_group('gloo')
    rank = torch_dist.get_rank()

    from sanitizer_toys import (
        FaultInjectionHook,
        RecordHook,
        make_runner,
        model_state,
        sanitizer_of,
    )

    from focal_plugin.hooks import NonFiniteTrainingError

    hook_kwargs, faults = SCENARIOS[args.scenario]
    injector, record = FaultInjectionHook(faults, ranks=[1]), RecordHook()
    runner = make_runner(
        args.work_dir, dict(type='GradientSanitizerHook', **hook_kwargs), max_iters=8,
        launcher='pytorch',
        # Runner reads model_wrapper_cfg from its cfg, as it does for config-file runs
        cfg=dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None)),
        extra_hooks=(injector, record))
    result = dict(rank=rank, world_size=torch_dist.get_world_size(), model_type=None)
    error = None
    try:
        runner.train()
        result['status'] = 'finished'
    except NonFiniteTrainingError as exc:
        result.update(status='raised', message=str(exc))
        error = exc
    result.update(model_type=type(runner.model).__name__, iter=runner.iter,
                  counters=sanitizer_of(runner).counters, injected=injector.injected,
                  finite_after_iter=record.finite_after_iter)
    torch.save(model_state(runner), osp.join(args.work_dir, f'final_rank{rank}.pt'))
    with open(osp.join(args.work_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)
    if error is not None:
        raise error
    torch_dist.destroy_process_group()
    return 0


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    sys.exit(main())
