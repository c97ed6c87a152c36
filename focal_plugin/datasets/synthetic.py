"""Small generated stand-ins for MNIST and CIFAR-10, written in the official file formats.

They let the tests (and anyone offline) run every dataset, model and config end to end through
the real file-reading code, in seconds. They are not meant to be learnt from, except
``separable_at``, which makes a binary MNIST task trivially separable so that a high learning
rate drives the logits into float32 saturation (the focal loss's failure case) within a few
dozen steps.
"""
import os
import os.path as osp
import pickle

import numpy as np

from .idx import write_idx
from .sources import MNIST_FILE_PREFIX, check_split

__all__ = ['write_synthetic_mnist', 'write_synthetic_cifar10']


def _digit_cycle(num_samples):
    """Digits 0, 1, ..., 9, 0, 1, ...: every threshold splits them predictably."""
    return (np.arange(num_samples) % 10).astype(np.uint8)


def write_synthetic_mnist(data_root, split='test', num_samples=40, seed=0, separable_at=None,
                          compress=True):
    """Write ``{prefix}-images-idx3-ubyte`` / ``-labels-idx1-ubyte`` (``.gz`` if ``compress``)
    into ``data_root`` and return ``(images, digits)`` as numpy arrays.

    Digits cycle 0..9. Images are random strokes (values 0..255, so both sides of a 0.5 mask
    threshold occur) unless ``separable_at`` is a digit ``k``: then digits ``<= k`` are
    all-255 images and the others all-0, so ``BinaryMNIST(threshold=k)`` is separable.
    """
    check_split(split)
    rng = np.random.default_rng(seed)
    digits = _digit_cycle(num_samples)
    if separable_at is None:
        strokes = rng.random((num_samples, 28, 28)) < 0.2
        images = (strokes * rng.integers(1, 256, (num_samples, 28, 28))).astype(np.uint8)
    else:
        images = np.where((digits <= separable_at)[:, None, None], 255, 0)
        images = np.broadcast_to(images, (num_samples, 28, 28)).astype(np.uint8)
    suffix = '.gz' if compress else ''
    prefix = MNIST_FILE_PREFIX[split]
    write_idx(osp.join(data_root, f'{prefix}-images-idx3-ubyte{suffix}'), images)
    write_idx(osp.join(data_root, f'{prefix}-labels-idx1-ubyte{suffix}'), digits)
    return images, digits


def write_synthetic_cifar10(data_root, split='train', num_samples=20, seed=0):
    """Write CIFAR-10 python batches (``data_batch_1..5`` or ``test_batch``) into
    ``data_root/cifar-10-batches-py`` and return ``(images (N, 3, 32, 32), labels)``.

    Classes cycle 0..9; the train split's samples are spread over the five batch files.
    """
    check_split(split)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_samples, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(num_samples) % 10
    folder = osp.join(data_root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)
    names = [f'data_batch_{i}' for i in range(1, 6)] if split == 'train' else ['test_batch']
    for name, part in zip(names, np.array_split(np.arange(num_samples), len(names))):
        batch = {'batch_label': name, 'labels': [int(v) for v in labels[part]],
                 'data': images[part].reshape(len(part), 3 * 32 * 32),
                 'filenames': [f'synthetic_{i}.png' for i in part]}
        with open(osp.join(folder, name), 'wb') as f:
            pickle.dump(batch, f)
    return images, labels
