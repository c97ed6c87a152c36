"""Read and write the IDX format that MNIST ships in (optionally gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian int32 per dimension, then the data in C order. MNIST only uses unsigned bytes
(type code 0x08), which is all this module supports. Decoding a whole file into one tensor at
once is what keeps the datasets fast: no per-sample PIL images.
"""
import gzip
import os

import numpy as np
import torch

__all__ = ['read_idx', 'write_idx']

_UINT8_TYPE_CODE = 0x08


def _open(path, mode):
    return gzip.open(path, mode) if str(path).endswith('.gz') else open(path, mode)


def read_idx(path) -> torch.Tensor:
    """Decode an unsigned-byte IDX file (``.gz`` or not) into a ``uint8`` tensor."""
    with _open(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f'{path} is not an IDX file (bad magic number)')
    if raw[2] != _UINT8_TYPE_CODE:
        raise ValueError(f'{path}: only unsigned-byte IDX files are supported, '
                         f'got type code {raw[2]:#04x}')
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype='>i4', count=ndim, offset=4))
    expected = int(np.prod(shape)) if shape else 1
    if len(raw) - header_len != expected:
        raise ValueError(f'{path}: header says {shape} ({expected} bytes) but the file holds '
                         f'{len(raw) - header_len} data bytes')
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)
    return torch.from_numpy(data.copy())


def write_idx(path, array) -> None:
    """Write a ``uint8`` array as an IDX file; gzip-compressed when ``path`` ends in ``.gz``."""
    data = np.ascontiguousarray(np.asarray(array))
    if data.dtype != np.uint8:
        raise ValueError(f'write_idx writes uint8 data only, got {data.dtype}')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    header = bytes([0, 0, _UINT8_TYPE_CODE, data.ndim])
    header += np.asarray(data.shape, dtype='>i4').tobytes()
    with _open(path, 'wb') as f:
        f.write(header + data.tobytes())
