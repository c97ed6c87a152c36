"""tools/time_train_step.py: one line per width, with the model's real parameter count."""
import os.path as osp
import re

from mmengine.config import Config
from mmengine.registry import MODELS
from tool_module import load_tool

import focal_plugin  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'stress', 'mnist_segmentation',
                  'unet-c8_sgd-30e_mnist-t10k-seg_cpu_none.py')


def test_times_each_width_of_the_config_model(capsys):
    tool = load_tool('time_train_step')
    assert tool.main([CONFIG, '--base-channels', '4', '8', '--steps', '1']) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith('base_channels')]
    assert len(lines) == 2
    model = MODELS.build(dict(Config.fromfile(CONFIG).model, base_channels=4))
    params = sum(p.numel() for p in model.parameters())
    assert re.fullmatch(rf'base_channels 4: batch 64, {params} parameters, [0-9.]+ ms per step '
                        r'\(median of 1\)', lines[0])
