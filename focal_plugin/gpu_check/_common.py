"""Shared pieces of the CUDA check: progress lines, the environment, Markdown tables."""
from __future__ import annotations

import os
import platform
import time
from typing import List

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
