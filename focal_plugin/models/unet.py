"""A 2D U-Net (4 down / 4 up stages) producing one logit per pixel."""
import torch
import torch.nn.functional as F
from torch import nn

from focal_plugin.registry import register_model

from .base import BinaryLogitModel

__all__ = ['UNet', 'UNetBinarySegmenter']

NUM_STAGES = 4


class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) twice; padding keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )


class UpStage(nn.Module):
    """2x2 transposed conv up, concatenate the skip connection, then a :class:`DoubleConv`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x, skip):
        x = self.up(x)
        # Odd sizes (28 -> 14 -> 7 -> 3 -> 1) lose a row/column when pooled: pad back to the
        # skip's size so that any input size works.
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net with stage widths ``base_channels * (1, 2, 4, 8, 16)`` (64 -> 1024 by default,
    as in the original U-Net and the published study; shrink ``base_channels`` for CPU runs)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 64):
        super().__init__()
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels),
                            ('base_channels', base_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        widths = [base_channels * 2**i for i in range(NUM_STAGES + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1]))
            for i in range(NUM_STAGES))
        self.up = nn.ModuleList(
            UpStage(widths[i + 1], widths[i]) for i in reversed(range(NUM_STAGES)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x):
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        x = skips.pop()
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.head(x)


@register_model
class UNetBinarySegmenter(BinaryLogitModel):
    """:class:`UNet` with one logit per pixel (targets are (N, 1, H, W) masks)."""

    def __init__(self, loss: dict, in_channels: int = 1, base_channels: int = 64,
                 data_preprocessor=None, init_cfg=None):
        super().__init__(loss, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.net = UNet(in_channels, 1, base_channels)

    def compute_logits(self, inputs):
        return self.net(inputs)
