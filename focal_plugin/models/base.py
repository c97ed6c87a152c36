"""The MMEngine model contract shared by the stress-test networks."""
from abc import abstractmethod

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS

__all__ = ['BinaryLogitModel', 'logit_extremes']


def _as_batch(x):
    """Accept a stacked tensor (``default_collate``) or a list of samples (``pseudo_collate``)."""
    return torch.stack(list(x)) if isinstance(x, (list, tuple)) else x


def logit_extremes(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """The most confident logit of each class in a batch: ``neg_logit_min`` (smallest logit
    of a negative, target <= 0.5) and ``pos_logit_max`` (largest logit of a positive).

    They say how close a run comes to the float32 break points of the original focal loss
    (``sigmoid(x) == 1`` above x = 16.64 for positives, ``1 - (1 - p)`` == 0 below x = -17.33
    for negatives; ``tests/functional/test_sigmoid_focal.py``). A class absent from the
    batch reports +inf / -inf (no confident logit). Device tensors, no host sync.
    """
    positive = targets > 0.5
    inf = torch.tensor(float('inf'), dtype=logits.dtype, device=logits.device)
    return dict(neg_logit_min=torch.where(positive, inf, logits).min(),
                pos_logit_max=torch.where(positive, logits, -inf).max())


class BinaryLogitModel(BaseModel):
    """A network with one logit per image or per pixel, trained with a loss built from config.

    ``loss`` is any registered loss that takes ``(logits, float_targets)`` of the same shape,
    e.g. ``dict(type='StableFocalLoss', gamma=0.5, alpha=0.5, stabilizer='none')`` to
    reproduce the original loss's failure, or ``stabilizer='exact'`` for the fix.

    Batches are ``{'inputs': images, 'data_samples': targets}`` with targets shaped like the
    logits ((N, 1) for classification, (N, 1, H, W) for segmentation). ``forward`` modes:

    * ``'loss'``: ``{'loss': ..., 'acc': ...}`` plus the logit statistics of
      :func:`logit_extremes` (logged only: no key but ``loss`` contains 'loss');
    * ``'predict'``: one ``{'logits', 'target'}`` dict per sample, for ``BinaryAccuracy``;
    * ``'tensor'``: the raw logits.
    """

    def __init__(self, loss: dict, data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.loss_module = MODELS.build(loss)

    @abstractmethod
    def compute_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits shaped like the targets."""

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        if mode not in ('loss', 'predict', 'tensor'):
            raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")
        logits = self.compute_logits(_as_batch(inputs))
        if mode == 'tensor':
            return logits
        if data_samples is None:
            raise ValueError(f"mode={mode!r} needs data_samples (the targets)")
        targets = _as_batch(data_samples).to(logits.dtype)
        if mode == 'loss':
            with torch.no_grad():
                acc = ((logits > 0) == (targets > 0.5)).float().mean()
                extremes = logit_extremes(logits, targets)
            return dict(loss=self.loss_module(logits, targets), acc=acc, **extremes)
        logits = logits.detach()
        return [dict(logits=lg, target=t) for lg, t in zip(logits, targets)]
