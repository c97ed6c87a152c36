"""focal_plugin: numerically stable focal-family losses and a gradient audit hook for
MMDetection 3.x.

Three layers, each importing only downward:

- math (:mod:`focal_plugin.functional`): PyTorch only;
- engine (hooks, losses, stress engine and models, MNIST/CIFAR datasets, metrics, loops):
  + MMEngine; ``import focal_plugin`` registers it in MMEngine's root registries (and the
  losses and datasets in mmdet's too when MMDetection is installed);
- detection (:mod:`focal_plugin.detection`: the shapes dataset): + MMDetection and mmcv
  (``pip install 'focal_plugin[mmdet]'``), imported only when mmdet is installed.

Without MMEngine only ``focal_plugin.functional`` is there and nothing is registered.
"""
from importlib.util import find_spec

from . import functional  # noqa: F401

__version__ = '0.1.0'

# Import errors from here on are real (e.g. an mmcv/mmdet mismatch) and must surface.
if find_spec('mmengine') is not None:
    from . import datasets, hooks, losses, models, stress  # noqa: F401  (registers classes)
    from .checkpoints import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()  # --resume with weights-only loading on (see .checkpoints)
    if find_spec('mmdet') is not None:
        from . import detection  # noqa: F401
