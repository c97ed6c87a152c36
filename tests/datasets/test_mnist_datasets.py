"""BinaryMNIST / MNISTSegmentation: IDX decoding, threshold labels, noise and masks, exactly."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from focal_plugin.datasets import BinaryMNIST, MNISTSegmentation
from focal_plugin.datasets.idx import read_idx, write_idx
from focal_plugin.datasets.noise import UniformNoise, make_noise_generator
from focal_plugin.datasets.synthetic import write_synthetic_mnist

torch.set_num_threads(1)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REAL_MNIST_T10K = os.environ['FOCAL_MNIST_T10K']  # set by conftest.py
T10K_DIGIT_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def mnist_root(tmp_path):
    """40 random-stroke images, digits cycling 0..9, in the test split's gzip IDX files."""
    images, digits = write_synthetic_mnist(str(tmp_path), split='test', num_samples=40, seed=0)
    return str(tmp_path), images, digits


@pytest.mark.parametrize('name', ['a-idx3-ubyte', 'a-idx3-ubyte.gz'])
def test_idx_round_trip_is_exact(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    write_idx(str(tmp_path / name), array)
    decoded = read_idx(str(tmp_path / name))
    assert decoded.dtype == torch.uint8
    assert np.array_equal(decoded.numpy(), array)


def test_idx_rejects_bad_files(tmp_path):
    (tmp_path / 'bad').write_bytes(b'\x01\x02\x08\x01\x00\x00\x00\x02ab')
    with pytest.raises(ValueError, match='magic'):
        read_idx(str(tmp_path / 'bad'))
    (tmp_path / 'short').write_bytes(b'\x00\x00\x08\x01\x00\x00\x00\x05ab')
    with pytest.raises(ValueError, match='data bytes'):
        read_idx(str(tmp_path / 'short'))


def test_binary_labels_are_digits_at_most_threshold(mnist_root):
    root, _, digits = mnist_root
    for threshold in range(9):
        dataset = BinaryMNIST(root, split='test', threshold=threshold)
        labels = torch.stack([dataset[i]['data_samples'] for i in range(len(dataset))])
        assert labels.shape == (40, 1)
        expected = torch.from_numpy((digits <= threshold).astype(np.float32)).unsqueeze(1)
        assert torch.equal(labels, expected)
        assert dataset.metainfo['positive_fraction'] == pytest.approx((threshold + 1) / 10)


@pytest.mark.parametrize('threshold', [-1, 9, 2.5, True, '3'])
def test_threshold_out_of_range_is_rejected(mnist_root, threshold):
    with pytest.raises(ValueError, match='threshold'):
        BinaryMNIST(mnist_root[0], split='test', threshold=threshold)


@pytest.mark.parametrize('noise', [-0.1, float('nan'), float('inf'), 'a', True])
def test_bad_noise_is_rejected(mnist_root, noise):
    with pytest.raises(ValueError, match='noise'):
        BinaryMNIST(mnist_root[0], split='test', noise=noise)
    with pytest.raises(ValueError, match='noise'):
        MNISTSegmentation(mnist_root[0], split='test', noise=noise)


def test_unknown_split_is_rejected(mnist_root):
    with pytest.raises(ValueError, match='split'):
        BinaryMNIST(mnist_root[0], split='val')


def test_without_noise_inputs_are_the_clean_images(mnist_root):
    root, images, _ = mnist_root
    dataset = BinaryMNIST(root, split='test', threshold=3, noise=0.0)
    sample = dataset[7]
    assert sample['inputs'].dtype == torch.float32 and sample['inputs'].shape == (1, 28, 28)
    expected = torch.from_numpy(images[7]).float().unsqueeze(0) / 255.0
    assert torch.equal(sample['inputs'], expected)


def test_noise_is_uniform_with_the_amplitude_then_clipped(mnist_root):
    root, images, _ = mnist_root
    amplitude, seed = 0.75, 3
    dataset = BinaryMNIST(root, split='test', threshold=3, noise=amplitude, seed=seed)
    generator = make_noise_generator(seed)  # the main process's documented noise stream
    for index in (0, 5, 5, 11):  # noise is drawn on every load, in load order
        clean = torch.from_numpy(images[index]).float().unsqueeze(0) / 255.0
        expected = (clean + amplitude * torch.rand((1, 28, 28), generator=generator)).clamp(0, 1)
        noisy = dataset[index]['inputs']
        assert torch.equal(noisy, expected)
        assert (noisy >= clean).all() and (noisy <= clean + amplitude + 1e-6).all()
        assert (noisy <= 1).all()
        assert (noisy[clean == 1.0] == 1.0).all()  # saturated pixels stay at 1 after clipping


def test_noise_is_fresh_per_load_and_reproducible_by_seed(mnist_root):
    root = mnist_root[0]
    first = BinaryMNIST(root, split='test', noise=0.5, seed=1)
    again = BinaryMNIST(root, split='test', noise=0.5, seed=1)
    other = BinaryMNIST(root, split='test', noise=0.5, seed=2)
    a = [first[i]['inputs'] for i in (0, 0, 1)]
    b = [again[i]['inputs'] for i in (0, 0, 1)]
    c = [other[i]['inputs'] for i in (0, 0, 1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])  # the same sample loaded twice gets new noise
    assert not torch.equal(a[0], c[0])


def test_dataloader_workers_draw_different_reproducible_noise(tmp_path):
    # All-black negatives make the inputs pure noise, so streams can be compared directly.
    write_synthetic_mnist(str(tmp_path), split='test', num_samples=20, separable_at=-1)
    dataset = BinaryMNIST(str(tmp_path), split='test', threshold=0, noise=0.5, seed=0)

    def batches(seed):
        loader = DataLoader(dataset, batch_size=5, num_workers=2,
                            generator=torch.Generator().manual_seed(seed))
        return [batch['inputs'] for batch in loader]

    run, rerun = batches(0), batches(0)
    assert all(torch.equal(x, y) for x, y in zip(run, rerun))
    # Batches 0 and 1 come from workers 0 and 1: their noise must not be the same stream.
    assert not torch.equal(run[0], run[1])
    assert not torch.equal(run[0], batches(1)[0])


def test_uniform_noise_rejects_non_int_seed():
    with pytest.raises(ValueError, match='seed'):
        UniformNoise(0.5, seed=1.5)


def test_segmentation_mask_is_taken_from_the_clean_image(mnist_root):
    root, images, _ = mnist_root
    clean = MNISTSegmentation(root, split='test', noise=0.0)
    noisy = MNISTSegmentation(root, split='test', noise=0.75, seed=4)
    for index in (0, 13, 39):
        expected_mask = torch.from_numpy(images[index] >= 128).float().unsqueeze(0)  # x/255 > .5
        assert torch.equal(clean[index]['data_samples'], expected_mask)
        assert torch.equal(noisy[index]['data_samples'], expected_mask)
        assert not torch.equal(noisy[index]['inputs'], clean[index]['inputs'])
    expected_fraction = float((images >= 128).mean())
    assert clean.metainfo['positive_fraction'] == pytest.approx(expected_fraction)


def test_segmentation_mask_threshold_is_validated(mnist_root):
    with pytest.raises(ValueError, match='mask_threshold'):
        MNISTSegmentation(mnist_root[0], split='test', mask_threshold=1.0)


def test_reads_uncompressed_files_in_torchvision_layout(tmp_path):
    raw = tmp_path / 'MNIST' / 'raw'
    _, digits = write_synthetic_mnist(str(raw), split='train', num_samples=12, compress=False)
    dataset = BinaryMNIST(str(tmp_path), split='train', threshold=4)
    assert len(dataset) == 12
    assert dataset.labels.squeeze(1).tolist() == [float(d <= 4) for d in digits]


def test_missing_data_names_both_remedies(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        BinaryMNIST(str(tmp_path / 'empty'), split='test')
    message = str(error.value)
    assert 'download=True' in message and 'data_root' in message and 't10k-images' in message
    assert 'FOCAL_MNIST_T10K' in message  # the variable README and the CPU configs use


def test_failed_download_names_both_remedies(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError('network is unreachable')

    monkeypatch.setattr(torchvision.datasets, 'MNIST', offline)
    with pytest.raises(FileNotFoundError) as error:
        MNISTSegmentation(str(tmp_path), split='train', download=True)
    message = str(error.value)
    assert 'network is unreachable' in message
    assert 'download=True' in message and 'data_root' in message


def test_download_reads_the_files_torchvision_fetched(tmp_path, monkeypatch):
    import torchvision.datasets

    def fake_download(root, train, download):  # what torchvision leaves on disk
        write_synthetic_mnist(osp.join(root, 'MNIST', 'raw'),
                              split='train' if train else 'test', num_samples=10)

    monkeypatch.setattr(torchvision.datasets, 'MNIST', fake_download)
    assert len(BinaryMNIST(str(tmp_path), split='train', download=True)) == 10


@pytest.mark.skipif(not osp.isdir(REAL_MNIST_T10K), reason='real MNIST t10k copy not present')
def test_real_mnist_test_split():
    dataset = BinaryMNIST(REAL_MNIST_T10K, split='test', threshold=0)
    assert len(dataset) == 10000
    assert torch.bincount(dataset.digits).tolist() == T10K_DIGIT_COUNTS
    assert int(dataset.labels.sum()) == T10K_DIGIT_COUNTS[0]
    assert dataset[0]['inputs'].shape == (1, 28, 28)
