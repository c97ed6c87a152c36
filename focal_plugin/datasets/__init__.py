"""Datasets of the stress tests (registered on import) and their evaluation metric: the engine
layer, torch + mmengine only (the offline detection set is in :mod:`focal_plugin.detection`)."""
from .cifar import CIFAR10AnimalsVehicles
from .metrics import BinaryAccuracy
from .mnist import BinaryMNIST, MNISTSegmentation

__all__ = ['BinaryMNIST', 'MNISTSegmentation', 'CIFAR10AnimalsVehicles', 'BinaryAccuracy']
