"""``ShapesCocoDataset``: mmdet's ``CocoDataset`` over the offline "shapes" data, generated
on first use (the generator, numpy and PIL only, is :mod:`focal_plugin.datasets.shapes_data`).
"""
from __future__ import annotations

import os
from typing import Optional

from mmdet.datasets import CocoDataset
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log

from ..datasets.shapes_data import CLASSES, DEFAULT_ROOT, make_shapes_dataset
from ..registry import register_dataset

__all__ = ['ShapesCocoDataset', 'make_shapes_dataset', 'CLASSES']


@register_dataset
class ShapesCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` over the shapes data; generates it first where asked to.

    Args:
        generate: when the annotation file does not exist: ``None`` (default) generates it
            only at the documented location, ``data_root='data/shapes/'`` (so a mistyped
            ``data_root`` is a ``FileNotFoundError`` naming the path, not a new dataset);
            ``True`` or keyword arguments of :func:`make_shapes_dataset` generate it at
            ``data_root`` whatever it is; ``False`` never generates.
        Everything else as ``CocoDataset``.
    """
    METAINFO = dict(classes=CLASSES,
                    palette=[(220, 20, 60), (0, 0, 142), (0, 160, 80), (250, 170, 30)])

    def __init__(self, *args, generate: Optional[dict] = None, **kwargs) -> None:
        self.generate = generate
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list:
        if not os.path.exists(self.ann_file):
            default_root = os.path.normpath(self.data_root or '') == DEFAULT_ROOT
            if self.generate is False or (self.generate is None and not default_root):
                raise FileNotFoundError(
                    f'shapes annotations {self.ann_file} not found (data_root '
                    f'{self.data_root!r}). Generate the dataset there with: .venv/bin/python '
                    f'tools/make_shapes_dataset.py --out {self.data_root}, or set '
                    "generate=True in the dataset config (only 'data/shapes/' is generated "
                    'without asking)')
            rank, _ = get_dist_info()
            if rank == 0:  # one writer; the other ranks wait at the barrier
                print_log(f'ShapesCocoDataset: generating the shapes dataset in '
                          f'{self.data_root} (first use)', logger='current')
                kwargs = self.generate if isinstance(self.generate, dict) else {}
                make_shapes_dataset(self.data_root, **kwargs)
            barrier()
        return super().load_data_list()
