"""Stress-test models (registered on import), and the divergence recorder that stops a run at
its first non-finite step."""
from .divergence import DivergenceRecorderHook, InterruptibleEpochBasedTrainLoop
from .lenet import LeNetBinaryClassifier
from .unet import UNetBinarySegmenter
from .vit import ViTBinaryClassifier

__all__ = ['LeNetBinaryClassifier', 'UNetBinarySegmenter', 'ViTBinaryClassifier',
           'DivergenceRecorderHook', 'InterruptibleEpochBasedTrainLoop']
