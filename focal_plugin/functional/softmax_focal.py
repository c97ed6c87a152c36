"""Softmax (multi-class) focal loss.

Lin et al., ICCV 2017 (https://arxiv.org/abs/1708.02002), multi-class form:

    FL(x, y) = - sum_c  w_c * q_c * (1 - p_c) ** gamma * log p_c,     p = softmax(x)

with ``q`` the target distribution (one-hot, or label-smoothed ``(1 - ls) * onehot + ls / C``)
and ``w_c`` the product of the per-class ``alpha`` and ``class_weight``.

Stability: ``p_c = sigmoid(d_c)`` with the margin ``d_c`` of class c over the log-sum-exp of
the others (:func:`softmax_margin`), so ``'exact'`` takes ``log p_c`` and ``log(1 - p_c)`` as
logsigmoids of the margin - exact when a softmax saturates, where ``1 - p_c`` rounds to 0 and
the ``'none'`` form's gradient is NaN.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import compute_dtype, reduce
from .fused_segmentation import fused_softmax_focal, segmentation_fused
from .stabilizer import modulating_factor
from .targets import check_label_range, check_probability_targets
from .validation import (
    check_class_vector,
    check_eps,
    check_exponent,
    check_ignore_index,
    check_index_labels,
    check_logits,
    check_probability,
    check_reduction,
    check_stabilizer,
    not_ignored,
)

__all__ = ['softmax_focal_loss', 'softmax_focal_terms', 'target_distribution',
           'softmax_margin', 'log1m_softmax']


def softmax_margin(logits: Tensor, dim: int = 1) -> Tensor:
    """Each class's logit minus the log-sum-exp of the *other* classes: ``d_c = x_c - O_c``.

    A softmax probability is a sigmoid of this margin, ``p_c = sigmoid(d_c)``, so
    ``log p_c = logsigmoid(d_c)`` and ``log(1 - p_c) = logsigmoid(-d_c)`` are both exact where
    the softmax saturates (``log_softmax`` of a dominant class and ``1 - p_c`` both cancel).
    With ``z = x - m`` (m the maximum), for every class but the arg-max
    ``d_c = z_c - log(sum_j e^(z_j) - e^(z_c))`` keeps the arg-max's term (1) in the sum, so the
    subtraction loses no significant digits; for the arg-max itself the other classes'
    log-sum-exp of ``z`` is taken directly. Nothing of size ``|m|`` is ever added back, so the
    margin keeps full relative precision at logits of any size.
    """
    top = logits.argmax(dim=dim, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(dim, top, True)
    # Work in logits shifted by the maximum m (any constant; detached is exact): the margin is
    # then a difference of O(1)-scaled numbers. Forming ``x - (log(rest) + m)`` instead rounds
    # ``log(rest) + m`` to the spacing of m (1e-4 relative loss of log p at |x| ~ 4e3).
    z = logits - logits.amax(dim=dim, keepdim=True).detach()
    shifted = torch.exp(z)
    rest = shifted.sum(dim=dim, keepdim=True) - shifted
    others = torch.log(torch.where(is_top, torch.ones_like(rest), rest))
    others_of_top = torch.logsumexp(z.masked_fill(is_top, -float('inf')), dim=dim,
                                    keepdim=True)
    return z - torch.where(is_top, others_of_top, others)


def log1m_softmax(logits: Tensor, dim: int = 1) -> Tensor:
    """``log(1 - softmax(logits))`` along ``dim``, exact where the softmax saturates."""
    return F.logsigmoid(-softmax_margin(logits, dim))


def softmax_focal_loss(inputs: Tensor,
                       targets: Tensor,
                       alpha: Union[float, Sequence[float], Tensor, None] = None,
                       gamma: float = 2.0,
                       reduction: str = 'mean',
                       *,
                       class_weight: Union[Sequence[float], Tensor, None] = None,
                       ignore_index: int = -100,
                       label_smoothing: float = 0.0,
                       stabilizer: str = 'exact',
                       eps: float = 1e-3) -> Tensor:
    """Multi-class focal loss on logits, shaped like ``F.cross_entropy``.

    Args:
        inputs: logits ``(N, C)`` or ``(N, C, d1, d2, ...)``, C >= 2.
        targets: class indices ``(N,)`` / ``(N, d1, ...)`` in ``[0, C)``, or ``ignore_index``;
            or, as ``F.cross_entropy`` takes them, class probabilities of ``inputs``' shape
            (Mixup / CutMix / soft labels; ``ignore_index`` does not apply to them).
        alpha: ``None``, a scalar, or one weight per class (alpha_c in the paper).
        gamma: focusing parameter, >= 0.
        reduction: ``'none'`` (per-element, ignored elements are 0) | ``'mean'`` (over the
            non-ignored elements; 0 if there are none) | ``'sum'``.
        class_weight: optional per-class weights (as ``F.cross_entropy``'s ``weight``).
        ignore_index: label that contributes neither loss nor gradient.
        label_smoothing: in [0, 1); the target becomes ``(1 - ls) * q + ls / C``.
        stabilizer, eps: see :mod:`focal_plugin.functional.stabilizer`.

    Example::

        >>> x = torch.tensor([[30.0, 0.0, -30.0]], requires_grad=True)  # a saturated softmax
        >>> softmax_focal_loss(x, torch.tensor([0]), gamma=0.5).backward()
        >>> bool(torch.isfinite(x.grad).all())           # 'none' would give NaN here
        True
    """
    check_reduction(reduction)
    loss, valid = softmax_focal_terms(inputs, targets, alpha, gamma, class_weight=class_weight,
                                      ignore_index=ignore_index,
                                      label_smoothing=label_smoothing, stabilizer=stabilizer,
                                      eps=eps)
    if reduction == 'mean':
        return loss.sum() / valid.sum().clamp(min=1)
    return reduce(loss, reduction)


def is_probability_target(inputs: Tensor, targets: Tensor) -> bool:
    """Class probabilities of ``inputs``' shape, as ``F.cross_entropy`` takes them."""
    return isinstance(targets, Tensor) and targets.is_floating_point() and \
        targets.shape == inputs.shape


def index_labels(inputs: Tensor, targets: Tensor, ignore_index: int,
                 names: Tuple[str, str]) -> Tuple[Tensor, Tensor]:
    """``(labels, valid)`` of class-index targets (N, ...): the labels with ignored elements
    set to 0 (checked to be in [0, C)), and the mask of the elements that count."""
    if isinstance(targets, Tensor) and targets.is_floating_point():
        raise TypeError(f'{names[1]} must be integer class indices of shape '
                        f'{(inputs.shape[0],) + tuple(inputs.shape[2:])} or class '
                        f'probabilities of the shape of {names[0]} '
                        f'{tuple(inputs.shape)}, got {targets.dtype} '
                        f'{tuple(targets.shape)}')
    check_index_labels(targets, names[1])
    expected = (inputs.shape[0],) + tuple(inputs.shape[2:])
    if tuple(targets.shape) != expected:
        raise ValueError(f'{names[1]} must have shape {expected} (class indices) or '
                         f'{tuple(inputs.shape)} (probabilities) for {names[0]} of shape '
                         f'{tuple(inputs.shape)}, got {tuple(targets.shape)}')
    valid = not_ignored(targets, ignore_index)
    labels = torch.where(valid, targets, 0)
    check_label_range(labels, 0, inputs.shape[1] - 1, names[1],
                      f' (class indices; or ignore_index={ignore_index})')
    return labels, valid


def target_distribution(inputs: Tensor, targets: Tensor, ignore_index: int,
                        label_smoothing: float, names: Tuple[str, str]) -> Tuple[Tensor, Tensor]:
    """``(q, valid)``: the target distribution over classes (N, C, ...) and the mask of the
    elements that count (N, ...), from class indices or from probabilities."""
    num_classes = inputs.shape[1]
    if is_probability_target(inputs, targets):
        check_probability_targets(targets, names[1])
        q = targets.to(inputs.dtype)
        valid = torch.ones(targets.shape[:1] + targets.shape[2:], dtype=torch.bool,
                           device=targets.device)
    else:
        labels, valid = index_labels(inputs, targets, ignore_index, names)
        # one-hot by comparison, not F.one_hot: no host sync, a bad label never indexes memory
        classes = torch.arange(num_classes, device=inputs.device)
        q = (labels.unsqueeze(1) == classes.view((1, -1) + (1,) * (inputs.ndim - 2))).to(
            inputs.dtype)
    if label_smoothing > 0:
        q = q * (1 - label_smoothing) + label_smoothing / num_classes
    return q, valid


def softmax_focal_terms(inputs: Tensor, targets: Tensor,
                        alpha: Union[float, Sequence[float], Tensor, None] = None,
                        gamma: float = 2.0, *,
                        class_weight: Union[Sequence[float], Tensor, None] = None,
                        ignore_index: int = -100, label_smoothing: float = 0.0,
                        stabilizer: str = 'exact', eps: float = 1e-3,
                        names: Tuple[str, str] = ('inputs', 'targets')
                        ) -> Tuple[Tensor, Tensor]:
    """The element-wise softmax focal loss (N, ...) with ignored elements 0, and the mask of
    the elements that count: :func:`softmax_focal_loss` before its reduction. ``names``: the
    caller's names of (inputs, targets) for error messages (the loss modules say pred,
    target)."""
    check_logits(inputs, names[0])
    if inputs.ndim < 2 or inputs.shape[1] < 2:
        raise ValueError(f'{names[0]} must be (N, C, ...) logits with C >= 2 classes, got '
                         f'shape {tuple(inputs.shape)}')
    gamma = check_exponent(gamma, 'gamma')
    check_stabilizer(stabilizer)
    eps = check_eps(eps)
    label_smoothing = check_probability(label_smoothing, 'label_smoothing', open_above=True)
    ignore_index = check_ignore_index(ignore_index)
    num_classes = inputs.shape[1]
    x = inputs.to(compute_dtype(inputs))
    class_vectors = [check_class_vector(v, num_classes, name, x)
                     for name, v in (('alpha', alpha), ('class_weight', class_weight))]
    if stabilizer == 'exact' and label_smoothing == 0 and \
            not is_probability_target(inputs, targets) and \
            segmentation_fused(x, *class_vectors):
        # class indices: only the labelled class enters, one log-softmax pass (.fused_segmentation)
        labels, valid = index_labels(x, targets, ignore_index, names)
        weight = valid.to(x.dtype)
        for vec in class_vectors:
            if vec is not None:
                weight = weight * vec[labels]

        def reference(logits: Tensor) -> Tensor:  # for a create_graph backward only
            q = torch.zeros_like(logits).scatter_(1, labels.long().unsqueeze(1), 1.0)
            return _focal_terms(logits, q, valid, class_vectors, gamma, stabilizer, eps)
        return fused_softmax_focal(x, labels, weight, gamma, reference), valid
    q, valid = target_distribution(x, targets, ignore_index, label_smoothing, names)
    return _focal_terms(x, q, valid, class_vectors, gamma, stabilizer, eps), valid


def _focal_terms(x: Tensor, q: Tensor, valid: Tensor, class_vectors: list, gamma: float,
                 stabilizer: str, eps: float) -> Tensor:
    """The autograd formulation: the element-wise loss (N, ...), 0 where not ``valid``."""
    num_classes = x.shape[1]
    if stabilizer == 'exact':  # the true loss: exact log p and log(1 - p) from the margin
        margin = softmax_margin(x, dim=1)
        log_p = F.logsigmoid(margin)
        forms = dict(log_base=lambda: F.logsigmoid(-margin))
    else:  # the common formulation, verbatim: log_softmax and 1 - softmax
        log_p = F.log_softmax(x, dim=1)
        forms = {}
    factor = modulating_factor(gamma, stabilizer, eps,
                               base=lambda: 1 - torch.softmax(x, dim=1), **forms)
    per_class = -q * factor * log_p
    shape = (1, num_classes) + (1,) * (x.ndim - 2)
    for vec in class_vectors:
        if vec is not None:
            per_class = per_class * vec.view(shape)
    return per_class.sum(dim=1) * valid
