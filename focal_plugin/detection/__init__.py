"""The detection layer: what needs MMDetection (and so mmcv) on top of the engine layer.

``ShapesCocoDataset`` (mmdet's ``CocoDataset`` over the offline shapes set, generated on first
use). ``import focal_plugin`` imports this package only when mmdet is installed; importing it
without mmdet raises an ``ImportError`` that says how to install it.
"""
from importlib.util import find_spec

if find_spec('mmdet') is None:
    raise ImportError("focal_plugin.detection needs MMDetection and mmcv: "
                      "pip install 'focal_plugin[mmdet]' (or run tools/setup.sh)")

from .shapes import ShapesCocoDataset, make_shapes_dataset  # noqa: E402

__all__ = ['ShapesCocoDataset', 'make_shapes_dataset']
