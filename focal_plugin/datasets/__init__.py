"""Datasets of the stress tests and the offline detection set (registered on import), and the
stress tests' evaluation metric."""
from .cifar import CIFAR10AnimalsVehicles
from .metrics import BinaryAccuracy
from .mnist import BinaryMNIST, MNISTSegmentation
from .shapes import ShapesCocoDataset

__all__ = ['BinaryMNIST', 'MNISTSegmentation', 'CIFAR10AnimalsVehicles', 'BinaryAccuracy',
           'ShapesCocoDataset']
