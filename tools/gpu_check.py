"""Check the CUDA path of the fused losses: parity, speed and memory, compilation, autocast.

    python tools/gpu_check.py OUT_DIR [--sections parity speed compile autocast segmentation
                                      hook] [--quick]

Needs only torch and ``focal_plugin.functional`` (put the working tree on PYTHONPATH, or use
``tools/gpu_check.sh``). Without CUDA it runs on the CPU at small sizes and says which
CUDA-only figures it skipped. One Markdown table per section goes to OUT_DIR; see
:mod:`focal_plugin.gpu_check`.
"""
import argparse
import shlex
import sys

from focal_plugin.cli import HelpFormatter
from focal_plugin.gpu_check import SECTIONS, run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('out_dir', help='folder for the Markdown tables')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS),
                        help='the checks to run, one Markdown table each')
    parser.add_argument('--quick', action='store_true',
                        help='fewer cases and sizes (what CI runs on the CPU)')
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    run(args.out_dir, args.sections, args.quick,
        command=shlex.join(['bash', 'tools/gpu_check.sh', *argv]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
