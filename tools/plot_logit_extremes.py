"""Plot the most confident logits of stress runs per epoch (from their ``divergence.json``)
against the float32 break points of the original focal loss, and write them as a CSV.

    .venv/bin/python tools/plot_logit_extremes.py LABEL=RUN_DIR_OR_JSON [...] --out PREFIX

writes ``PREFIX.png`` and ``PREFIX.csv`` (label, epoch, step, neg_logit_min, pos_logit_max).
"""
import argparse
import csv
import os.path as osp
import sys

from focal_plugin.cli import HelpFormatter
from focal_plugin.stress import read_divergence
from focal_plugin.stress.cells import RECORD_FILE
from focal_plugin.stress.figures import plot_logit_extremes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('runs', nargs='+', help='LABEL=work dir or divergence.json')
    parser.add_argument('--out', required=True, help='output path prefix (no extension)')
    args = parser.parse_args(argv)
    records = {}
    for run in args.runs:
        label, sep, path = run.partition('=')
        if not sep:
            parser.error(f'expected LABEL=PATH, got {run!r}')
        work_dir, name = osp.split(path) if path.endswith('.json') else (path, RECORD_FILE)
        records[label] = read_divergence(work_dir, name)
        if records[label] is None:
            parser.error(f'no divergence record at {osp.join(work_dir, name)}')
    plot_logit_extremes(records, args.out + '.png')
    with open(args.out + '.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['label', 'epoch', 'step', 'neg_logit_min', 'pos_logit_max'])
        for label, r in records.items():
            for i, (lo, hi) in enumerate(zip(r['neg_logit_min'], r['pos_logit_max'])):
                writer.writerow([label, i + 1, (i + 1) * r['iters_per_epoch'], lo, hi])
    print(f'wrote {args.out}.png and {args.out}.csv')
    return 0


if __name__ == '__main__':
    sys.exit(main())
