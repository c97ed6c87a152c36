"""focal_plugin: numerically stable focal-family losses and a gradient audit hook for
MMDetection 3.x.

Three layers, each importing only downward:

- math (:mod:`focal_plugin.functional`): PyTorch only;
- engine (hooks, losses, stress engine and models, MNIST/CIFAR datasets, metrics, loops):
  + MMEngine; ``import focal_plugin`` registers it in MMEngine's root registries;
- detection (:mod:`focal_plugin.detection`: the shapes dataset): + MMDetection and mmcv
  (``pip install 'focal_plugin[mmdet]'``).

``import focal_plugin`` never imports mmdet or mmcv (seconds of start-up for users who never
touch detection): the losses and datasets enter mmdet's registries, and the detection layer
is imported, when mmdet itself imports its registry and its datasets (see
:mod:`focal_plugin.registry`), so an mmdet config's ``custom_imports = ['focal_plugin']``
works as before. Without MMEngine only ``focal_plugin.functional`` is there and nothing is
registered.
"""
from importlib.util import find_spec

from . import functional  # noqa: F401

__version__ = '0.1.0'

# Import errors from here on are real (e.g. an mmcv/mmdet mismatch) and must surface.
if find_spec('mmengine') is not None:
    from . import datasets, hooks, losses, models, stress  # noqa: F401  (registers classes)
    from .checkpoints import allow_mmengine_checkpoints
    from .log_bridge import route_functional_logs
    from .registry import fill_mmdet_registries, import_detection_layer, when_imported
    allow_mmengine_checkpoints()  # --resume with weights-only loading on (see .checkpoints)
    route_functional_logs()  # e.g. the compile notice of the fused kernels, in the run's log
    when_imported('mmdet.registry', fill_mmdet_registries)
    when_imported('mmdet.datasets', import_detection_layer)
