"""CIFAR-10 as a binary task: vehicles vs animals (4:6), as in the published stress test."""
from torch.utils.data import Dataset

from focal_plugin.registry import register_dataset

from .sources import load_cifar10

__all__ = ['CIFAR10AnimalsVehicles', 'CIFAR10_CLASSES', 'VEHICLE_CLASSES']

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')
VEHICLE_CLASSES = (0, 1, 8, 9)  # airplane, automobile, ship, truck


@register_dataset
class CIFAR10AnimalsVehicles(Dataset):
    """CIFAR-10 with the four vehicle classes as positives (1) and the six animal classes as
    negatives (0), the published study's split.

    Images are (3, 32, 32) floats; with ``normalize=True`` (the published setting) they are
    mapped from [0, 1] to [-1, 1] (mean 0.5, std 0.5 per channel). Models that need another
    resolution (ViT-B/16 at 224) resize the batch themselves.
    """

    def __init__(self, data_root: str = 'data/cifar10', split: str = 'train',
                 normalize: bool = True, download: bool = False):
        self.images, classes = load_cifar10(data_root, split, download)
        positive = sum((classes == c) for c in VEHICLE_CLASSES)
        self.labels = positive.float().unsqueeze(1)  # (N, 1)
        self.normalize = bool(normalize)
        self.data_root, self.split = data_root, split
        self.metainfo = dict(classes=('animal', 'vehicle'),
                             positive_fraction=float(self.labels.double().mean()))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index].float().div_(255.0)
        if self.normalize:
            image = image.sub_(0.5).div_(0.5)
        return dict(inputs=image, data_samples=self.labels[index])
