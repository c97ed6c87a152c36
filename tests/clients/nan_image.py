"""A data transform that turns chosen images into NaN: the fault the client tests inject into
a real framework's data pipeline, imported by their configs through ``custom_imports``
(``PYTHONPATH`` points here). Registered in mmengine's root ``TRANSFORMS``, which every
codebase's registry reaches."""
import os

import numpy as np
from mmengine.registry import TRANSFORMS


@TRANSFORMS.register_module()
class NaNImage:
    """``img`` becomes all-NaN (float32) when its file name is in ``file_names``: the forward
    pass, the loss, BatchNorm's running statistics and every gradient go non-finite."""

    def __init__(self, file_names=()):
        self.file_names = set(file_names)

    def __call__(self, results: dict) -> dict:
        if os.path.basename(results.get('img_path', '')) in self.file_names:
            results['img'] = np.full(results['img'].shape, np.nan, dtype=np.float32)
        return results
