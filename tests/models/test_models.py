"""The stress-test models: architecture as published, registration, forward modes, validation."""
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import MODELS

import focal_plugin  # noqa: F401  (registers the models)
from focal_plugin.models import LeNetBinaryClassifier, UNetBinarySegmenter, ViTBinaryClassifier
from focal_plugin.models.base import logit_extremes

torch.set_num_threads(1)

LOSS = dict(type='StableFocalLoss', gamma=0.5, alpha=0.5, stabilizer='exact')


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('registry', [MODELS, MMDET_MODELS], ids=['mmengine', 'mmdet'])
@pytest.mark.parametrize('cfg', [
    dict(type='LeNetBinaryClassifier'),
    dict(type='UNetBinarySegmenter', base_channels=4),
    dict(type='ViTBinaryClassifier', arch='mini4'),
])
def test_models_build_from_both_registries(registry, cfg):
    model = registry.build(dict(cfg, loss=LOSS))
    assert type(model).__name__ == cfg['type']
    assert type(model.loss_module).__name__ == 'StableFocalLoss'
    assert model.loss_module.stabilizer == 'exact'


def test_lenet_is_the_published_cnn():
    # conv(5)->6, pool, conv(5)->16, pool, fc 120, 84, 1: 256 flat features for 1x28x28 ...
    mnist = LeNetBinaryClassifier(LOSS)
    assert mnist.net.classifier[1].in_features == 16 * 4 * 4
    assert n_params(mnist.net) == 156 + 2416 + 30840 + 10164 + 85
    assert mnist(torch.rand(3, 1, 28, 28)).shape == (3, 1)
    # ... and 400 for 3x32x32
    cifar = LeNetBinaryClassifier(LOSS, in_channels=3, input_size=32)
    assert cifar.net.classifier[1].in_features == 16 * 5 * 5
    assert n_params(cifar.net) == 456 + 2416 + 48120 + 10164 + 85
    assert cifar(torch.rand(2, 3, 32, 32)).shape == (2, 1)


@pytest.mark.parametrize('kwargs, name', [(dict(input_size=12), 'input_size'),
                                          (dict(in_channels=0), 'in_channels')])
def test_lenet_rejects_bad_sizes(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LeNetBinaryClassifier(LOSS, **kwargs)


def test_unet_defaults_to_64_base_channels_and_four_stages_each_way():
    unet = UNetBinarySegmenter(LOSS).net
    assert len(unet.down) == 4 and len(unet.up) == 4
    assert unet.stem[0].out_channels == 64
    assert unet.down[-1][1][3].out_channels == 1024  # bottleneck: 64 * 2**4
    assert [stage.up.out_channels for stage in unet.up] == [512, 256, 128, 64]
    assert all(isinstance(m, torch.nn.BatchNorm2d) for m in (unet.stem[1], unet.stem[4]))


@pytest.mark.parametrize('size', [(28, 28), (32, 32), (37, 23)])
def test_unet_keeps_the_input_size(size):
    model = UNetBinarySegmenter(LOSS, base_channels=4)
    assert model.net.down[-1][1][3].out_channels == 64
    assert model(torch.rand(2, 1, *size)).shape == (2, 1, *size)


def test_unet_rejects_bad_width():
    with pytest.raises(ValueError, match='base_channels'):
        UNetBinarySegmenter(LOSS, base_channels=0)


def test_vit_defaults_to_vit_b16_at_224():
    model = ViTBinaryClassifier(LOSS)
    assert model.image_size == 224 and model.net.patch_size == 16
    assert len(model.net.encoder.layers) == 12 and model.net.hidden_dim == 768
    # torchvision's vit_b_16 (86,567,656 parameters with a 1000-class head) with one output.
    assert n_params(model.net) == 86_567_656 - (768 * 1000 + 1000) + (768 + 1)


def test_vit_resizes_inputs_to_its_image_size():
    model = ViTBinaryClassifier(LOSS, arch='mini4', image_size=16)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    assert ViTBinaryClassifier(LOSS, arch='mini4')(torch.rand(2, 3, 32, 32)).shape == (2, 1)


@pytest.mark.parametrize('kwargs, name', [(dict(arch='b32'), 'arch'),
                                          (dict(arch='mini4', depth=3), 'depth'),
                                          (dict(arch='mini4', image_size=30), 'image_size')])
def test_vit_rejects_unknown_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ViTBinaryClassifier(LOSS, **kwargs)


@pytest.fixture
def lenet():
    torch.manual_seed(0)
    return LeNetBinaryClassifier(LOSS)


def test_loss_mode_returns_a_differentiable_loss_and_the_batch_accuracy(lenet):
    inputs, targets = torch.rand(4, 1, 28, 28), torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    out = lenet(inputs, targets, mode='loss')
    assert set(out) == {'loss', 'acc', 'neg_logit_min', 'pos_logit_max'}
    assert out['loss'].requires_grad and torch.isfinite(out['loss'])
    logits = lenet(inputs, mode='tensor')
    expected_acc = ((logits > 0).float() == targets).float().mean()
    assert out['acc'] == expected_acc
    assert out['neg_logit_min'] == logits[targets == 0].min()
    assert out['pos_logit_max'] == logits[targets == 1].max()
    # the loss module is the configured one, applied to (logits, targets)
    assert torch.allclose(out['loss'], lenet.loss_module(logits, targets))


def test_logit_extremes_of_a_batch_without_one_class():
    logits = torch.tensor([[-30.0], [5.0]])
    stats = logit_extremes(logits, torch.zeros(2, 1))
    assert stats['neg_logit_min'] == -30.0 and stats['pos_logit_max'] == float('-inf')
    stats = logit_extremes(logits, torch.ones(2, 1))
    assert stats['neg_logit_min'] == float('inf') and stats['pos_logit_max'] == 5.0


def test_predict_mode_returns_one_entry_per_sample(lenet):
    inputs, targets = torch.rand(3, 1, 28, 28), torch.tensor([[1.0], [0.0], [1.0]])
    predictions = lenet(inputs, targets, mode='predict')
    assert len(predictions) == 3
    assert torch.equal(torch.stack([p['target'] for p in predictions]), targets)
    assert torch.equal(torch.stack([p['logits'] for p in predictions]),
                       lenet(inputs, mode='tensor'))


def test_lists_of_samples_are_batched(lenet):
    # pseudo_collate (MMEngine's default collate) hands over lists instead of stacked tensors
    inputs = [torch.rand(1, 28, 28) for _ in range(2)]
    targets = [torch.tensor([1.0]), torch.tensor([0.0])]
    stacked = lenet(torch.stack(inputs), torch.stack(targets), mode='loss')['loss']
    assert torch.equal(lenet(inputs, targets, mode='loss')['loss'], stacked)


def test_bad_mode_or_missing_targets_raise(lenet):
    with pytest.raises(ValueError, match='mode'):
        lenet(torch.rand(1, 1, 28, 28), mode='train')
    with pytest.raises(ValueError, match='data_samples'):
        lenet(torch.rand(1, 1, 28, 28), mode='loss')
