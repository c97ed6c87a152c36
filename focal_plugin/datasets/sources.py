"""Find MNIST / CIFAR-10 on disk (or download them with torchvision) and decode them whole.

Two ways to provide the data, and every "not found" error names both:

* ``download=True``: torchvision downloads the official archives into ``data_root`` (needs
  internet); the files are then read from where torchvision put them.
* a local ``data_root`` holding the standard files: MNIST's IDX files (``.gz`` or not), either
  directly in ``data_root`` or in torchvision's ``data_root/MNIST/raw``; CIFAR-10's python
  batches in ``data_root/cifar-10-batches-py`` or directly in ``data_root``.

The files are read directly rather than through torchvision's dataset classes because those
insist on all four MNIST files being present and on CIFAR's md5 sums, which rules out the
MNIST test split alone (as on offline machines) and generated test data.
"""
import os.path as osp
import pickle

import numpy as np
import torch

from .idx import read_idx

__all__ = ['SPLITS', 'MNIST_FILE_PREFIX', 'check_split', 'load_mnist', 'load_cifar10']

SPLITS = ('train', 'test')
MNIST_FILE_PREFIX = {'train': 'train', 'test': 't10k'}
_CIFAR_BATCHES = {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']}


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _missing_data_message(what: str, data_root: str, looked_in, download_error=None) -> str:
    where = ', '.join(repr(p) for p in looked_in)
    lines = [f'{what} not found (looked in {where}).']
    if download_error is not None:
        lines.append(f'Downloading it failed: {download_error}')
    lines.append('Either pass download=True (needs internet; torchvision fetches the official '
                 f'files into data_root={data_root!r}), or put the standard files in data_root '
                 '(for example --cfg-options train_dataloader.dataset.data_root=PATH '
                 'val_dataloader.dataset.data_root=PATH).')
    if what.startswith('MNIST'):
        lines.append('The CPU stress configs read data_root from the FOCAL_MNIST_T10K '
                     'environment variable (default data/mnist): export FOCAL_MNIST_T10K=PATH '
                     'to the folder holding the t10k-*-idx*-ubyte(.gz) files.')
    return ' '.join(lines)


# ----------------------------------------------------------------------------------- MNIST
def _mnist_dirs(data_root):
    return [data_root, osp.join(data_root, 'MNIST', 'raw')]


def _find_mnist_files(data_root, split):
    prefix = MNIST_FILE_PREFIX[split]
    for folder in _mnist_dirs(data_root):
        for suffix in ('', '.gz'):
            images = osp.join(folder, f'{prefix}-images-idx3-ubyte{suffix}')
            labels = osp.join(folder, f'{prefix}-labels-idx1-ubyte{suffix}')
            if osp.isfile(images) and osp.isfile(labels):
                return images, labels
    return None


def _locate(find, name: str, split: str, expected: str, data_root: str, searched, download):
    """``find()``'s result; when it finds nothing, download through torchvision (if asked)
    and look again; fail with a message naming both remedies."""
    found = find()
    if found is None and download:
        try:
            from torchvision import datasets
            dataset_cls = {'MNIST': datasets.MNIST, 'CIFAR-10': datasets.CIFAR10}[name]
            dataset_cls(root=data_root, train=(split == 'train'), download=True)
        except Exception as err:  # network errors come in many types (URLError, OSError, ...)
            raise FileNotFoundError(_missing_data_message(
                f'{name} {split} split', data_root, searched, err)) from err
        found = find()
    if found is None:
        raise FileNotFoundError(_missing_data_message(
            f'{name} {split} split ({expected})', data_root, searched))
    return found


def load_mnist(data_root: str, split: str = 'train', download: bool = False):
    """Return ``(images, digits)``: ``uint8`` (N, 28, 28) and ``int64`` (N,) tensors."""
    check_split(split)
    prefix = MNIST_FILE_PREFIX[split]
    files = _locate(lambda: _find_mnist_files(data_root, split), 'MNIST', split,
                    f'{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]',
                    data_root, _mnist_dirs(data_root), download)
    images, digits = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or digits.ndim != 1 or len(images) != len(digits):
        raise ValueError(f'MNIST files disagree: images {tuple(images.shape)} from {files[0]}, '
                         f'labels {tuple(digits.shape)} from {files[1]}')
    return images, digits.long()


# -------------------------------------------------------------------------------- CIFAR-10
def _cifar_dirs(data_root):
    return [osp.join(data_root, 'cifar-10-batches-py'), data_root]


def _find_cifar_folder(data_root, split):
    for folder in _cifar_dirs(data_root):
        if all(osp.isfile(osp.join(folder, name)) for name in _CIFAR_BATCHES[split]):
            return folder
    return None


def load_cifar10(data_root: str, split: str = 'train', download: bool = False):
    """Return ``(images, labels)``: ``uint8`` (N, 3, 32, 32) and ``int64`` (N,) tensors."""
    check_split(split)
    folder = _locate(lambda: _find_cifar_folder(data_root, split), 'CIFAR-10', split,
                     ', '.join(_CIFAR_BATCHES[split]), data_root, _cifar_dirs(data_root),
                     download)
    images, labels = [], []
    for name in _CIFAR_BATCHES[split]:
        # The official CIFAR-10 distribution is a set of pickles (torchvision reads them the
        # same way); only files the user placed in data_root are read.
        with open(osp.join(folder, name), 'rb') as f:
            batch = pickle.load(f, encoding='latin1')
        images.append(np.asarray(batch['data'], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch['labels'])
    return torch.from_numpy(np.concatenate(images)), torch.as_tensor(labels, dtype=torch.int64)
