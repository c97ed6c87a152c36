"""mmdet drop-in edges (issue 23): where mmdet asserts we raise an error that is both a
ValueError and an AssertionError; where mmdet is lenient (VFL alpha > 1, integer scores, dense
(N, C, ...) QFL targets, negative or float QFL labels) we give mmdet's values; where a value
would be silently wrong (labels above C, fractional labels) a clear ValueError."""
import pytest
import torch
from mmdet.models.losses import QualityFocalLoss, VarifocalLoss

from focal_plugin.losses import StableQualityFocalLoss, StableVarifocalLoss


def _pred(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize('build, call', [
    (lambda: StableVarifocalLoss(use_sigmoid=False), None),
    (lambda: StableVarifocalLoss(alpha=-0.1), None),
    (lambda: StableQualityFocalLoss(use_sigmoid=False), None),
    (StableVarifocalLoss, lambda m: m(_pred(4, 3), torch.rand(4, 2))),
])
def test_where_mmdet_asserts_the_error_is_both(build, call):
    for error in (AssertionError, ValueError):
        with pytest.raises(error):
            module = build()
            call(module)


@pytest.mark.parametrize('targets', ['float', 'int', 'bool'])
def test_vfl_alpha_above_one_and_integer_scores_match_mmdet(targets):
    pred = _pred(6, 4)
    score = (torch.rand(6, 4, generator=torch.Generator().manual_seed(1)) > 0.7)
    score = {'float': score.float() * 0.8, 'int': score.long(), 'bool': score}[targets]
    ours = StableVarifocalLoss(alpha=2.0)(pred, score)
    theirs = VarifocalLoss(alpha=2.0)(pred, score.float())
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_dense_qfl_target_with_spatial_dims_matches_mmdet():
    pred = _pred(2, 3, 4, 5)
    target = torch.rand(2, 3, 4, 5) * (torch.rand(2, 3, 4, 5) > 0.8)
    torch.testing.assert_close(StableQualityFocalLoss()(pred, target),
                               QualityFocalLoss()(pred, target), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('labels', [
    torch.tensor([0, 2, -1, 3, 1, -1]),            # -1: background, as in mmdet
    torch.tensor([0.0, 2.0, 3.0, 3.0, 1.0, 0.0]),  # float class indices, converted
])
def test_qfl_tuple_labels_as_mmdet_reads_them(labels):
    pred, scores = _pred(6, 3), torch.rand(6)
    torch.testing.assert_close(StableQualityFocalLoss()(pred, (labels, scores)),
                               QualityFocalLoss()(pred, (labels.long(), scores)),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('labels, message', [
    (torch.tensor([0, 5]), r'labels must be <= 3'),  # above background: a bug, not a class
    (torch.tensor([0.0, 1.5]), 'whole class indices'),
])
def test_qfl_labels_that_would_be_silently_wrong_are_errors(labels, message):
    with pytest.raises(ValueError, match=message):
        StableQualityFocalLoss()(_pred(2, 3), (labels, torch.rand(2)))
