"""CIFAR10AnimalsVehicles (file reading, labels, pixel layout) and the BinaryAccuracy metric."""
import math

import pytest
import torch

from focal_plugin.datasets import BinaryAccuracy, CIFAR10AnimalsVehicles
from focal_plugin.datasets.synthetic import write_synthetic_cifar10

torch.set_num_threads(1)


@pytest.fixture
def cifar_root(tmp_path):
    train = write_synthetic_cifar10(str(tmp_path), split='train', num_samples=20, seed=0)
    test = write_synthetic_cifar10(str(tmp_path), split='test', num_samples=10, seed=1)
    return str(tmp_path), train, test


def test_vehicles_are_positive(cifar_root):
    root, (_, classes), _ = cifar_root
    dataset = CIFAR10AnimalsVehicles(root, split='train')
    assert len(dataset) == 20  # gathered from all five data_batch files
    labels = [float(dataset[i]['data_samples']) for i in range(20)]
    assert labels == [float(c in (0, 1, 8, 9)) for c in classes]
    assert dataset.metainfo['positive_fraction'] == pytest.approx(0.4)


def test_pixels_keep_the_channel_layout_and_normalization(cifar_root):
    root, _, (images, _) = cifar_root
    raw = torch.from_numpy(images[3]).float() / 255.0  # (3, 32, 32) as written
    normalized = CIFAR10AnimalsVehicles(root, split='test')[3]['inputs']
    assert normalized.shape == (3, 32, 32)
    assert torch.allclose(normalized, (raw - 0.5) / 0.5, atol=1e-6, rtol=0)
    assert normalized.min() >= -1 and normalized.max() <= 1
    plain = CIFAR10AnimalsVehicles(root, split='test', normalize=False)[3]['inputs']
    assert torch.equal(plain, raw)


def test_missing_cifar_names_both_remedies(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        CIFAR10AnimalsVehicles(str(tmp_path), split='train')
    assert 'download=True' in str(error.value) and 'data_root' in str(error.value)


def test_cifar_unknown_split_is_rejected(cifar_root):
    with pytest.raises(ValueError, match='split'):
        CIFAR10AnimalsVehicles(cifar_root[0], split='validation')


def _predictions(logits, targets):
    return [dict(logits=lg, target=t) for lg, t in zip(logits, targets)]


def test_binary_accuracy_and_f1_are_exact():
    metric = BinaryAccuracy()
    # preds 1, 0, 1, 0 vs targets 1, 1, 0, 0: 2 of 4 correct, 1 true positive of 2 + 2.
    metric.process({}, _predictions(torch.tensor([[2.0], [-1.0], [0.5], [-3.0]]),
                                    torch.tensor([[1.0], [1.0], [0.0], [0.0]])))
    # a 2x2 mask: preds 1 1 0 0, targets 1 0 0 0 -> 3 of 4 correct, tp 1
    metric.process({}, _predictions(torch.tensor([[[[1.0, 2.0], [-1.0, -2.0]]]]),
                                    torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])))
    result = metric.evaluate(size=5)  # 4 images + 1 mask
    assert result['binary/accuracy'] == pytest.approx(5 / 8)
    assert result['binary/f1'] == pytest.approx(2 * 2 / (4 + 3))
    assert result['binary/nonfinite_fraction'] == 0


def test_binary_accuracy_is_nan_for_a_model_with_non_finite_outputs():
    metric = BinaryAccuracy()
    metric.process({}, _predictions(torch.tensor([[float('nan')], [3.0]]),
                                    torch.tensor([[0.0], [1.0]])))
    result = metric.evaluate(size=2)
    assert math.isnan(result['binary/accuracy']) and math.isnan(result['binary/f1'])
    assert result['binary/nonfinite_fraction'] == 0.5
