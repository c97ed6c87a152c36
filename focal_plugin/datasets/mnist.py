"""MNIST as the published focal-loss stress tests use it: a thresholded binary
classification task and a pixel-mask segmentation task, both with uniform input noise.

Each sample is a dict ``{'inputs': image, 'data_samples': target}`` (float tensors); with
``collate_fn=dict(type='default_collate')`` a batch is the same dict of stacked tensors, which
is what the models in :mod:`focal_plugin.models` take.
"""
from torch.utils.data import Dataset

from focal_plugin.registry import register_dataset

from .noise import UniformNoise
from .sources import load_mnist

__all__ = ['BinaryMNIST', 'MNISTSegmentation', 'check_threshold']

MAX_THRESHOLD = 8  # digits <= 9 would make every sample positive


def check_threshold(threshold) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, int) \
            or not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f'threshold must be an int in 0..{MAX_THRESHOLD} (digits <= threshold '
                         f'are the positive class), got {threshold!r}')
    return threshold


class _NoisyMNIST(Dataset):
    """Decodes one MNIST split once into memory; adds fresh uniform noise on every load."""

    def __init__(self, data_root: str, split: str, noise: float, seed: int, download: bool):
        self.noise = UniformNoise(noise, seed)  # validates before the (slower) decoding
        self.images, self.digits = load_mnist(data_root, split, download)
        self.data_root, self.split = data_root, split

    def __len__(self):
        return len(self.images)

    def _clean_image(self, index):
        """The image as ``torchvision.transforms.ToTensor`` gives it: (1, 28, 28) in [0, 1]."""
        return self.images[index].unsqueeze(0).float().div_(255.0)


@register_dataset
class BinaryMNIST(_NoisyMNIST):
    """MNIST turned binary by a digit threshold: digits ``<= threshold`` are positive (1).

    ``threshold`` 0..8 sets the class imbalance (0: only zeros are positive, about 1:9).
    ``noise`` is the amplitude of the uniform noise (0, 0.5 and 0.75 in the published study);
    see :mod:`focal_plugin.datasets.noise` for how it is drawn and seeded.
    """

    def __init__(self, data_root: str = 'data/mnist', split: str = 'train', threshold: int = 0,
                 noise: float = 0.0, seed: int = 0, download: bool = False):
        self.threshold = check_threshold(threshold)
        super().__init__(data_root, split, noise, seed, download)
        self.labels = (self.digits <= self.threshold).float().unsqueeze(1)  # (N, 1)
        self.metainfo = dict(classes=(f'digit > {threshold}', f'digit <= {threshold}'),
                             threshold=threshold, noise=self.noise.amplitude,
                             positive_fraction=float(self.labels.double().mean()))

    def __getitem__(self, index):
        return dict(inputs=self.noise(self._clean_image(index)), data_samples=self.labels[index])


@register_dataset
class MNISTSegmentation(_NoisyMNIST):
    """Segment MNIST digits: the target mask is ``image > mask_threshold`` on the clean image
    (in [0, 1]); the noise is added to the input after the mask is taken."""

    def __init__(self, data_root: str = 'data/mnist', split: str = 'train',
                 noise: float = 0.0, seed: int = 0, mask_threshold: float = 0.5,
                 download: bool = False):
        if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, (int, float)) \
                or not 0 <= mask_threshold < 1:
            raise ValueError(f'mask_threshold must be a number in [0, 1), got {mask_threshold!r}')
        self.mask_threshold = float(mask_threshold)
        super().__init__(data_root, split, noise, seed, download)
        # Fraction of foreground pixels, in chunks to avoid a 60k x 784 float copy.
        foreground = sum(int((chunk.float().div_(255.0) > self.mask_threshold).sum())
                         for chunk in self.images.split(4096))
        self.metainfo = dict(classes=('background', 'digit'), noise=self.noise.amplitude,
                             positive_fraction=foreground / self.images.numel())

    def __getitem__(self, index):
        image = self._clean_image(index)
        mask = (image > self.mask_threshold).float()
        return dict(inputs=self.noise(image), data_samples=mask)
