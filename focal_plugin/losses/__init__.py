"""Registered MMDetection loss modules (mmdet's and mmengine's ``MODELS``).

Each module validates its arguments once, follows mmdet's loss contract
(``pred, target, weight=None, avg_factor=None, reduction_override=None``) and leaves the math
to :mod:`focal_plugin.functional`.
"""
from .focal import StableFocalLoss, StableSoftmaxFocalLoss
from .generalized_focal import StableQualityFocalLoss, StableVarifocalLoss
from .unified_focal import StableAsymmetricFocalLoss, StableFocalTverskyLoss, UnifiedFocalLoss

__all__ = ['StableFocalLoss', 'StableSoftmaxFocalLoss', 'StableQualityFocalLoss',
           'StableVarifocalLoss', 'UnifiedFocalLoss', 'StableAsymmetricFocalLoss',
           'StableFocalTverskyLoss']
