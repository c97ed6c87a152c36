"""Where the plugin's classes are registered, and when mmdet's registries get them.

OpenMMLab registries form a tree: mmengine's root registries and one child per codebase
(``mmdet``, ``mmseg``, ...). A child looks names up in itself and then in its parents, never in
its siblings. So a class registered in the *root* registry is found from every scope; one also
registered in ``mmdet``'s registry is listed in mmdet's own ``module_dict`` too.

Losses, models and datasets go into mmengine's root registries (usable from plain MMEngine
configs with no ``default_scope``, and from every codebase's scope) and into mmdet's too;
hooks, metrics and training loops go into the root registries only, which every scope reaches.

``import focal_plugin`` never imports mmdet (``import mmdet`` imports mmcv: seconds, in every
process, also for users who never touch detection). mmdet's registries are filled when
mmdet has imported them anyway: at once if ``mmdet.registry`` is already imported (mmdet's
``tools/train.py`` imports it before a config's ``custom_imports`` runs), else right after
it is first imported, by a one-shot import hook. The detection layer
(:mod:`focal_plugin.detection`, which imports ``mmdet.datasets``) is imported, the same way,
once ``mmdet.datasets`` is: a config with ``default_scope='mmdet'`` imports it before it looks
up a dataset type, so ``type='ShapesCocoDataset'`` resolves with ``custom_imports =
['focal_plugin']`` alone.
"""
from __future__ import annotations

import importlib
import sys
from importlib.abc import MetaPathFinder
from typing import Callable, Dict, List

from mmengine.registry import DATASETS as ROOT_DATASETS
from mmengine.registry import HOOKS as ROOT_HOOKS
from mmengine.registry import LOOPS as ROOT_LOOPS
from mmengine.registry import METRICS as ROOT_METRICS
from mmengine.registry import MODELS as ROOT_MODELS

__all__ = ['register_model', 'register_dataset', 'register_hook', 'register_metric',
           'register_loop', 'fill_mmdet_registries', 'import_detection_layer', 'when_imported']

# classes that also go into mmdet's registry of the same name, in registration order
_FOR_MMDET: Dict[str, List[type]] = {'MODELS': [], 'DATASETS': []}


def _register_once(registry, cls: type) -> None:
    if registry.module_dict.get(cls.__name__) is not cls:  # another class of that name raises
        registry.register_module(module=cls)


def _also_in_mmdet(kind: str, cls: type) -> None:
    _FOR_MMDET[kind].append(cls)
    mmdet_registry = sys.modules.get('mmdet.registry')
    if mmdet_registry is not None and hasattr(mmdet_registry, kind):
        _register_once(getattr(mmdet_registry, kind), cls)


def fill_mmdet_registries() -> None:
    """Register every model and dataset class in mmdet's ``MODELS`` / ``DATASETS``
    (idempotent; needs ``mmdet.registry`` imported)."""
    mmdet_registry = sys.modules['mmdet.registry']
    for kind, classes in _FOR_MMDET.items():
        for cls in classes:
            _register_once(getattr(mmdet_registry, kind), cls)


def register_model(cls):
    """Class decorator: register an ``nn.Module`` in mmengine's ``MODELS`` (and mmdet's)."""
    ROOT_MODELS.register_module(module=cls)
    _also_in_mmdet('MODELS', cls)
    return cls


def register_dataset(cls):
    """Class decorator: register a dataset in mmengine's ``DATASETS`` (and mmdet's)."""
    ROOT_DATASETS.register_module(module=cls)
    _also_in_mmdet('DATASETS', cls)
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


# ---- run a callback once a module is imported, without importing it -------------------------

class _AfterImport(MetaPathFinder):
    """Finds nothing itself: for a watched module name it asks the other finders for the
    spec and wraps the loader so that the callbacks run right after the module's body. The
    callbacks are taken when the module executes, not when it is found (``find_spec`` alone,
    e.g. ``importlib.util.find_spec``, loads nothing)."""

    def __init__(self) -> None:
        self.callbacks: Dict[str, List[Callable[[], None]]] = {}

    def find_spec(self, name, path, target=None):
        if name not in self.callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, 'exec_module'):
            return spec
        exec_module = loader.exec_module

        def exec_then_callbacks(module):
            exec_module(module)
            for callback in self.callbacks.pop(name, []):
                callback()
            if not self.callbacks and self in sys.meta_path:
                sys.meta_path.remove(self)

        loader.exec_module = exec_then_callbacks  # this spec's own loader instance
        return spec


_WATCHER = _AfterImport()


def when_imported(module: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` now if ``module`` is imported, else right after it is first
    imported (by anyone). Never imports ``module`` itself."""
    if sys.modules.get(module) is not None:  # (None: an import blocked on purpose)
        callback()
        return
    _WATCHER.callbacks.setdefault(module, []).append(callback)
    if _WATCHER not in sys.meta_path:
        sys.meta_path.insert(0, _WATCHER)


def import_detection_layer() -> None:
    importlib.import_module('focal_plugin.detection')
