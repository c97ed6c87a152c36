"""Generate the offline dataset "shapes" (images, COCO JSON, label maps).

    .venv/bin/python tools/make_shapes_dataset.py --out data/shapes --seed 0

The detection configs also generate it on first use (``ShapesCocoDataset``); this CLI is for
the MMSegmentation config (label maps in ``{split}_seg/``) and for other sizes, seeds or
locations. The generator is ``focal_plugin/datasets/shapes_data.py`` (numpy and PIL only).
"""
import argparse
import time

from focal_plugin.cli import HelpFormatter
from focal_plugin.datasets.shapes_data import make_shapes_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--out', default='data/shapes',
                        help='folder for the images and the COCO JSON annotation files')
    parser.add_argument('--num-train', type=int, default=600, help='training images')
    parser.add_argument('--num-val', type=int, default=150, help='validation images')
    parser.add_argument('--size', type=int, default=128,
                        help='side of the square images, in pixels')
    parser.add_argument('--seed', type=int, default=0,
                        help='random seed (the same seed writes the same dataset)')
    args = parser.parse_args()
    start = time.time()
    paths = make_shapes_dataset(args.out, args.num_train, args.num_val, args.size, args.seed)
    print(f'wrote {paths} in {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
