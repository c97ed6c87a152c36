"""The shapes generator's outlines and label maps (the Mask R-CNN and MMSegmentation data)."""
import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from focal_plugin.datasets.shapes_data import SEG_CLASSES, make_shapes_dataset


def test_outlines_and_label_maps_agree_with_the_boxes_and_each_other(tmp_path):
    paths = make_shapes_dataset(str(tmp_path), num_train=12, num_val=2, size=96, seed=5)
    coco = COCO(paths['train'])
    agreement = []
    for ann in coco.dataset['annotations']:
        img = coco.imgs[ann['image_id']]
        mask = coco.annToMask(ann).astype(bool)
        x, y, w, h = ann['bbox']
        ys, xs = np.nonzero(mask)
        assert mask.any()
        # the outline lies in its box (a pixel of rasterisation slack)
        assert xs.min() >= x - 1 and xs.max() <= x + w + 1
        assert ys.min() >= y - 1 and ys.max() <= y + h + 1
        label_map = np.asarray(Image.open(tmp_path / 'train_seg' / img['file_name']))
        assert label_map.shape == (img['height'], img['width'])
        assert set(np.unique(label_map)) <= set(range(len(SEG_CLASSES)))
        agreement.append((label_map[mask] == ann['category_id']).mean())
    # later shapes may cover a little of earlier ones (overlap < 20 % by construction)
    assert np.median(agreement) > 0.9 and min(agreement) > 0.5


def test_label_maps_are_deterministic(tmp_path):
    for name in ('a', 'b'):
        make_shapes_dataset(str(tmp_path / name), num_train=3, num_val=1, size=64, seed=2)
    for split in ('train_seg', 'val_seg'):
        for f in sorted((tmp_path / 'a' / split).iterdir()):
            assert np.array_equal(np.asarray(Image.open(f)),
                                  np.asarray(Image.open(tmp_path / 'b' / split / f.name)))
