"""Pure tensor math of the stabilized focal-loss family (PyTorch only, no registries).

``from focal_plugin.functional import sigmoid_focal_loss`` is a drop-in for
``torchvision.ops.sigmoid_focal_loss`` with two extra keyword arguments, ``stabilizer`` and
``eps``; see :mod:`.stabilizer` for the three modes.
"""
from .compile_backend import get_fused_backend, set_fused_backend
from .generalized_focal import quality_focal_loss, varifocal_loss
from .sigmoid_focal import sigmoid_focal_loss
from .softmax_focal import log1m_softmax, softmax_focal_loss, softmax_margin
from .stabilizer import STABILIZERS, modulating_factor, zero_safe_pow
from .targets import get_target_check, set_target_check
from .unified_focal import (
                            UFL_VARIANTS,
                            asymmetric_focal_loss,
                            focal_tversky_loss,
                            unified_focal_loss,
)
from .value_checks import flush_value_checks, get_value_check_mode, set_value_check_mode

__all__ = [
    'STABILIZERS', 'UFL_VARIANTS', 'modulating_factor', 'zero_safe_pow', 'log1m_softmax',
    'softmax_margin',
    'sigmoid_focal_loss', 'softmax_focal_loss', 'quality_focal_loss', 'varifocal_loss',
    'asymmetric_focal_loss', 'focal_tversky_loss', 'unified_focal_loss', 'set_fused_backend',
    'get_fused_backend', 'set_target_check', 'get_target_check', 'flush_value_checks',
    'set_value_check_mode', 'get_value_check_mode',
]
