"""focal_plugin: numerically stable focal-family losses and a gradient audit hook for
MMDetection 3.x.

``import focal_plugin`` (or ``custom_imports=dict(imports=['focal_plugin'])`` in a config)
registers every loss, hook, model and dataset of the package. The pure math lives in
:mod:`focal_plugin.functional`, which needs only PyTorch: without MMDetection installed the
package imports and ``focal_plugin.functional`` works, and nothing is registered.
"""
from importlib.util import find_spec

from . import functional  # noqa: F401

__version__ = '0.1.0'

if find_spec('mmdet') is not None:
    # Import errors from here on are real (e.g. an mmcv/mmdet mismatch) and must surface.
    from . import datasets, hooks, losses, models, stress  # noqa: F401  (registers classes)
