"""Accuracy and F1 (Dice for masks) of binary logits, element-wise."""
import torch
from mmengine.evaluator import BaseMetric

from focal_plugin.registry import register_metric

__all__ = ['BinaryAccuracy']


@register_metric
class BinaryAccuracy(BaseMetric):
    """Element-wise accuracy and F1 of ``logits > 0`` against ``target > 0.5``.

    Works for one logit per image (classification) and one per pixel (segmentation, where F1
    is the Dice score). Consumes the ``predict`` output of the models in
    :mod:`focal_plugin.models`: a list of ``{'logits': Tensor, 'target': Tensor}``.

    A model that produced any non-finite logit has no meaningful accuracy, so both metrics are
    NaN then (and ``nonfinite_fraction`` says how much of the output was non-finite).
    """

    default_prefix = 'binary'

    def process(self, data_batch, data_samples) -> None:
        logits = torch.stack([s['logits'] for s in data_samples]).float().flatten(1)
        target = torch.stack([s['target'] for s in data_samples]).flatten(1) > 0.5
        pred = logits > 0
        # One entry per sample (not per batch): in distributed evaluation, collect_results
        # truncates to the dataset size, dropping the sampler's padding duplicates.
        counts = dict(
            count=[target.shape[1]] * len(target),
            correct=(pred == target).sum(1).tolist(),
            true_pos=(pred & target).sum(1).tolist(),
            pred_pos=pred.sum(1).tolist(),
            target_pos=target.sum(1).tolist(),
            nonfinite=(~torch.isfinite(logits)).sum(1).tolist(),
        )
        self.results.extend(dict(zip(counts, values)) for values in zip(*counts.values()))

    def compute_metrics(self, results) -> dict:
        total = {key: sum(r[key] for r in results) for key in results[0]}
        nonfinite_fraction = total['nonfinite'] / total['count']
        if total['nonfinite']:
            return dict(accuracy=float('nan'), f1=float('nan'),
                        nonfinite_fraction=nonfinite_fraction)
        denominator = total['pred_pos'] + total['target_pos']
        f1 = 2 * total['true_pos'] / denominator if denominator else 1.0
        return dict(accuracy=total['correct'] / total['count'], f1=f1,
                    nonfinite_fraction=nonfinite_fraction)
