"""Shared pieces of the CUDA check and the benchmark tools: progress lines, the environment,
Markdown tables, the CPU allocation peak."""
from __future__ import annotations

import os
import platform
import time
from typing import Callable, List

import torch


def log(message: str) -> None:
    print(f'[gpu_check {time.strftime("%H:%M:%S")}] {message}', flush=True)


def environment(device: str) -> List[str]:
    lines = [f'- torch {torch.__version__}, Python {platform.python_version()}, '
             f'{platform.platform()}']
    if device == 'cuda':
        props = torch.cuda.get_device_properties(0)
        lines.append(f'- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, '
                     f'compute capability {props.major}.{props.minor}, CUDA {torch.version.cuda}')
        try:
            import triton
            lines.append(f'- Triton {triton.__version__}')
        except ImportError:
            lines.append('- Triton: not installed')
    else:
        lines.append(f'- no CUDA device: CPU ({os.cpu_count()} cores, '
                     f'{torch.get_num_threads()} threads); CUDA-only figures skipped')
    return lines


def write_table(out_dir: str, name: str, title: str, header: List[str], rows: List[list],
                notes: List[str], env: List[str], command: str) -> str:
    path = os.path.join(out_dir, f'{name}.md')
    lines = [f'# {title}', '', f'Command: `{command}`', ''] + env + [''] + notes + ['']
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    log(f'wrote {path}')
    return path


def cpu_allocation_peak(run: Callable[[], None]) -> int:
    """The highest total of live CPU allocations while ``run()`` runs, in bytes, from
    ``torch.profiler``'s allocation events (frees are negative sizes): what the benchmark
    tools report as peak memory on the CPU."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.typed[0] == _EventType.Allocation and node.typed[1].device.type == 'cpu':
            events.append((node.start_time_ns, node.typed[1].alloc_size))
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak
