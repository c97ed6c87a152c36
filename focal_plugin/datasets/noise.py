"""Uniform input noise as in the published stress test: ``clip(x + amplitude * U[0, 1), 0, 1)``.

The noise is drawn when a sample is loaded, so a sample gets fresh noise every epoch (the
published code draws it per batch). It is still reproducible: the draws come from a generator
of the noise object's own, seeded from ``seed`` and, inside a DataLoader worker, from that
worker's seed (which PyTorch derives per epoch from the main process's seeded RNG). With
``num_workers=0`` the noise sequence depends on ``seed`` alone; with workers, on ``seed`` and
the runner's ``randomness.seed``.
"""
import math

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = ['UniformNoise', 'check_noise_amplitude', 'make_noise_generator']


def check_noise_amplitude(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) \
            or not math.isfinite(noise) or noise < 0:
        raise ValueError(f'noise must be a finite number >= 0 (the amplitude of the uniform '
                         f'noise), got {noise!r}')
    return float(noise)


def make_noise_generator(seed: int, worker_seed=None) -> torch.Generator:
    """The generator a :class:`UniformNoise` draws from in the main process
    (``worker_seed=None``) or in a DataLoader worker with that ``worker_info.seed``."""
    entropy = [int(seed)] if worker_seed is None else [int(seed), int(worker_seed)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class UniformNoise:
    """Add ``amplitude * U[0, 1)`` to an image in [0, 1] and clip the result to [0, 1]."""

    def __init__(self, amplitude: float = 0.0, seed: int = 0):
        self.amplitude = check_noise_amplitude(amplitude)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'seed must be an int, got {seed!r}')
        self.seed = seed
        self._generator = None
        self._stream_key = None  # which process/worker stream self._generator belongs to

    def _stream(self) -> torch.Generator:
        worker = get_worker_info()
        key = None if worker is None else worker.seed
        # A worker starts from a copy of this object, so it must notice that it is a new stream.
        if self._generator is None or self._stream_key != key:
            self._generator = make_noise_generator(self.seed, key)
            self._stream_key = key
        return self._generator

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.amplitude == 0:
            return image
        noise = torch.rand(image.shape, generator=self._stream(), dtype=image.dtype)
        return (image + self.amplitude * noise).clamp_(0.0, 1.0)

    def __getstate__(self):
        # Generators are not picklable (spawned workers pickle the dataset); workers re-seed.
        state = self.__dict__.copy()
        state['_generator'] = None
        state['_stream_key'] = None
        return state
