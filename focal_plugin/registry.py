"""Where the plugin's classes are registered.

OpenMMLab registries form a tree: mmengine's root registries and one child per codebase
(``mmdet``, ``mmseg``, ...). A child looks names up in itself and then in its parents, never in
its siblings. So a class registered in the *root* registry is found from every scope, and a
class registered in ``mmdet``'s registry is found by an MMDetection config even when mmdet's
own registry is inspected directly (``'StableFocalLoss' in mmdet.registry.MODELS``).

Losses, models and datasets go into mmengine's root registries (usable from plain MMEngine
configs with no ``default_scope``, and from every codebase's scope) and, when MMDetection is
installed, into mmdet's too; hooks, metrics and training loops go into the root registries only,
which every scope reaches. MMDetection is optional here: ``mmdet.registry`` needs only mmengine
and mmdet's pure-Python package, not mmcv's compiled ops.
"""
from importlib.util import find_spec

from mmengine.registry import DATASETS as ROOT_DATASETS
from mmengine.registry import HOOKS as ROOT_HOOKS
from mmengine.registry import LOOPS as ROOT_LOOPS
from mmengine.registry import METRICS as ROOT_METRICS
from mmengine.registry import MODELS as ROOT_MODELS

__all__ = ['register_model', 'register_dataset', 'register_hook', 'register_metric',
           'register_loop', 'HAS_MMDET']

HAS_MMDET = find_spec('mmdet') is not None
if HAS_MMDET:
    from mmdet.registry import DATASETS as MMDET_DATASETS
    from mmdet.registry import MODELS as MMDET_MODELS


def register_model(cls):
    """Class decorator: register an ``nn.Module`` in mmengine's ``MODELS`` (and mmdet's)."""
    if HAS_MMDET:
        MMDET_MODELS.register_module(module=cls)
    ROOT_MODELS.register_module(module=cls)
    return cls


def register_dataset(cls):
    """Class decorator: register a dataset in mmengine's ``DATASETS`` (and mmdet's)."""
    if HAS_MMDET:
        MMDET_DATASETS.register_module(module=cls)
    ROOT_DATASETS.register_module(module=cls)
    return cls


def register_hook(cls):
    """Class decorator: register a hook in mmengine's root ``HOOKS`` (found from any scope)."""
    ROOT_HOOKS.register_module(module=cls)
    return cls


def register_metric(cls):
    """Class decorator: register a metric in mmengine's root ``METRICS``."""
    ROOT_METRICS.register_module(module=cls)
    return cls


def register_loop(cls):
    """Class decorator: register a training loop in mmengine's root ``LOOPS``."""
    ROOT_LOOPS.register_module(module=cls)
    return cls
