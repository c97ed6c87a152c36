"""Stress-test models (registered on import): one logit per image or pixel, the loss from
config. The divergence recorder and its loop live in :mod:`focal_plugin.stress`."""
from .lenet import LeNetBinaryClassifier
from .unet import UNetBinarySegmenter
from .vit import ViTBinaryClassifier

__all__ = ['LeNetBinaryClassifier', 'UNetBinarySegmenter', 'ViTBinaryClassifier']
