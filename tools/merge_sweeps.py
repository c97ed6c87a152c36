"""Merge the ``results.csv`` of several ``tools/sweep.py`` runs into one grid: a CSV, the
completed-epochs heatmaps (one panel per loss mode) and a Markdown table per mode.

    .venv/bin/python tools/merge_sweeps.py results/stress/*/results.csv \\
        results/stress/*/*/results.csv --out results/stress/mnist_binary_cpu_merged

A cell (mode, gamma, threshold, noise, seed) found in several files is taken from the first.
"""
import argparse
import shlex
import sys

from focal_plugin.cli import HelpFormatter
from focal_plugin.stress.sweep import merge_sweeps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('csvs', nargs='+', help='results.csv files of tools/sweep.py')
    parser.add_argument('--out', required=True, help='directory for the merged outputs')
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    merge_sweeps(args.csvs, args.out, shlex.join(['python', 'tools/merge_sweeps.py', *argv]))


if __name__ == '__main__':
    main()
