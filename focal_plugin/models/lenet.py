"""The published study's small CNN (LeNet-5 layout) with a single output logit."""
from torch import nn

from focal_plugin.registry import register_model

from .base import BinaryLogitModel

__all__ = ['LeNet5', 'LeNetBinaryClassifier']


class LeNet5(nn.Module):
    """conv(5)->6, max-pool 2, conv(5)->16, max-pool 2, fc 120, fc 84, fc ``num_outputs``,
    ReLU after every layer but the last. 1x28x28 inputs flatten to 16x4x4 = 256 features,
    3x32x32 to 16x5x5 = 400, as in the published code."""

    def __init__(self, in_channels: int = 1, input_size: int = 28, num_outputs: int = 1):
        super().__init__()
        for name, value in (('in_channels', in_channels), ('num_outputs', num_outputs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        # Each conv(5) trims 4 pixels and each pool halves; the last map must keep >= 1 pixel.
        side = ((input_size - 4) // 2 - 4) // 2 if isinstance(input_size, int) else 0
        if isinstance(input_size, bool) or side < 1:
            raise ValueError(f'input_size must be an int >= 16, got {input_size!r}')
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_outputs),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
class LeNetBinaryClassifier(BinaryLogitModel):
    """:class:`LeNet5` with one logit per image. ``in_channels=1, input_size=28`` for MNIST,
    ``in_channels=3, input_size=32`` for CIFAR-10."""

    def __init__(self, loss: dict, in_channels: int = 1, input_size: int = 28,
                 data_preprocessor=None, init_cfg=None):
        super().__init__(loss, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.net = LeNet5(in_channels, input_size)

    def compute_logits(self, inputs):
        return self.net(inputs)
