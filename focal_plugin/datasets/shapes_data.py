"""The offline "shapes" data: images, COCO-format boxes and outlines, and label maps.

    .venv/bin/python tools/make_shapes_dataset.py --out data/shapes --seed 0

Four shape classes with imbalanced frequencies (circle 50 %, square 30 %, triangle 15 %,
star 5 %), sizes from small (12 px) to large (~60 % of the image), drawn on textured, noisy
backgrounds. Deterministic for a seed; a few seconds for the default 600 + 150 images.
Each split gets ``{split}/*.png`` images, ``{split}.json`` (COCO: boxes and polygon outlines,
for MMDetection, :class:`focal_plugin.detection.ShapesCocoDataset`) and ``{split}_seg/*.png``
label maps (0 = background, 1-4 = the classes; MMSegmentation's ``BaseSegDataset`` layout).
numpy and PIL only: MMSegmentation users need no mmdet to make it.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ['CLASSES', 'SEG_CLASSES', 'DEFAULT_ROOT', 'make_shapes_dataset', 'draw_image']

CLASSES = ('circle', 'square', 'triangle', 'star')
DEFAULT_ROOT = os.path.normpath('data/shapes')  # generated there on first use
FREQUENCIES = (0.50, 0.30, 0.15, 0.05)
SEG_CLASSES = ('background',) + CLASSES  # label map values 0..4


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth color gradient, random lines and pixel noise: texture the detector must
    learn to ignore."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-60, 60, (2, 3))
    img = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
    img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 9)):
        p = rng.uniform(0, size, 4)
        draw.line(tuple(p), fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 3)))
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 1.0))))
    noise = rng.normal(0, rng.uniform(4, 14), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float):
    if kind == 'triangle':
        return [(cx + r * math.cos(angle + k * 2 * math.pi / 3),
                 cy + r * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    if kind == 'star':
        return [(cx + (r if k % 2 == 0 else r * 0.45) * math.cos(angle + k * math.pi / 5),
                 cy + (r if k % 2 == 0 else r * 0.45) * math.sin(angle + k * math.pi / 5))
                for k in range(10)]
    if kind == 'square':
        return [(cx + r * math.cos(angle + math.pi / 4 + k * math.pi / 2),
                 cy + r * math.sin(angle + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
    raise ValueError(kind)


def _overlap(a, b) -> float:
    """Intersection over the smaller box, for (x, y, w, h) boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / min(a[2] * a[3], b[2] * b[3])


def draw_image(rng: np.random.Generator, size: int, max_objects: int):
    """One image, its annotations [(label, (x, y, w, h), outline)] and its label map."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    label_map = Image.new('L', (size, size), 0)
    paint = ImageDraw.Draw(label_map)  # the same shapes in the same order: occlusion agrees
    boxes = []
    for _ in range(int(rng.integers(1, max_objects + 1))):  # (label, box, mask polygon)
        label = int(rng.choice(len(CLASSES), p=FREQUENCIES))
        for _attempt in range(10):  # keep objects mostly visible: little overlap
            # log-uniform radius: many small objects, some large ones
            r = float(np.exp(rng.uniform(np.log(6), np.log(size * 0.3))))
            cx, cy = rng.uniform(0, size, 2)
            box = (cx - r, cy - r, 2 * r, 2 * r)
            if all(_overlap(box, b) < 0.2 for _, b, _outline in boxes):
                break
        else:
            continue
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        if CLASSES[label] == 'circle':
            pts = [(cx - r, cy - r), (cx + r, cy + r)]
            draw.ellipse(pts, fill=color)
            paint.ellipse(pts, fill=label + 1)
            xs, ys = (cx - r, cx + r), (cy - r, cy + r)
            # the mask outline (no random draw: the images of a seed stay what they were)
            poly = [(cx + r * math.cos(k * math.pi / 16), cy + r * math.sin(k * math.pi / 16))
                    for k in range(32)]
        else:
            poly = _shape_polygon(CLASSES[label], cx, cy, r, float(rng.uniform(0, 2 * np.pi)))
            draw.polygon(poly, fill=color)
            paint.polygon(poly, fill=label + 1)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
        x1, y1 = min(float(size), max(xs)), min(float(size), max(ys))
        if x1 - x0 >= 2 and y1 - y0 >= 2:  # mostly outside the image: no annotation
            outline = [round(min(max(v, 0.0), float(size)), 2) for p in poly for v in p]
            boxes.append((label, [x0, y0, x1 - x0, y1 - y0], outline))
    return img, boxes, label_map


def make_split(out: str, split: str, num_images: int, size: int, seed: int,
               max_objects: int = 6) -> str:
    rng = np.random.default_rng(seed)
    img_dir, seg_dir = os.path.join(out, split), os.path.join(out, f'{split}_seg')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(seg_dir, exist_ok=True)
    coco = dict(images=[], annotations=[],
                categories=[dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)])
    for image_id in range(1, num_images + 1):
        img, boxes, label_map = draw_image(rng, size, max_objects)
        file_name = f'{image_id:06d}.png'
        img.save(os.path.join(img_dir, file_name))
        label_map.save(os.path.join(seg_dir, file_name))
        coco['images'].append(dict(id=image_id, file_name=file_name, width=size, height=size))
        for label, (x, y, w, h), outline in boxes:
            coco['annotations'].append(dict(
                id=len(coco['annotations']) + 1, image_id=image_id, category_id=label + 1,
                bbox=[round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                area=round(w * h, 2), iscrowd=0, segmentation=[outline]))
    ann_file = os.path.join(out, f'{split}.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    return ann_file


def make_shapes_dataset(out: str = 'data/shapes', num_train: int = 600, num_val: int = 150,
                        size: int = 128, seed: int = 0) -> dict:
    """Write ``out/{train,val}.json``, ``out/{train,val}/*.png`` and
    ``out/{train,val}_seg/*.png``; returns the annotation files' paths."""
    return dict(train=make_split(out, 'train', num_train, size, seed),
                val=make_split(out, 'val', num_val, size, seed + 1))
