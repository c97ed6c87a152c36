"""torchvision's VisionTransformer, trained from scratch, with one output logit.

torchvision is imported when a ViT is built, not with the package: the engine layer needs only
torch + mmengine, and only the CIFAR ViT stress configs need torchvision."""
import torch.nn.functional as F

from focal_plugin.registry import register_model

from .base import BinaryLogitModel

__all__ = ['VIT_ARCHS', 'ViTBinaryClassifier']

# Standard sizes (Dosovitskiy et al.; DeiT for S and Ti) plus a CPU-sized one for 32x32 input.
VIT_ARCHS = {
    'b16': dict(image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768,
                mlp_dim=3072),
    's16': dict(image_size=224, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384,
                mlp_dim=1536),
    'ti16': dict(image_size=224, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192,
                 mlp_dim=768),
    'mini4': dict(image_size=32, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64,
                  mlp_dim=128),
}


@register_model
class ViTBinaryClassifier(BinaryLogitModel):
    """A ViT with one logit per image. ``arch`` picks a size from :data:`VIT_ARCHS` ('b16' =
    ViT-B/16 at 224x224, the published setting); any of its entries (``image_size``,
    ``patch_size``, ``num_layers``, ``num_heads``, ``hidden_dim``, ``mlp_dim``) can be
    overridden. Inputs of another size (CIFAR's 32x32) are resized bilinearly to
    ``image_size`` batch-wise, which is cheaper than resizing each sample in the dataset.
    """

    def __init__(self, loss: dict, arch: str = 'b16', dropout: float = 0.0,
                 attention_dropout: float = 0.0, data_preprocessor=None, init_cfg=None,
                 **arch_overrides):
        super().__init__(loss, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if arch not in VIT_ARCHS:
            raise ValueError(f'arch must be one of {sorted(VIT_ARCHS)}, got {arch!r}')
        unknown = set(arch_overrides) - set(VIT_ARCHS[arch])
        if unknown:
            raise ValueError(f'unknown ViT arguments {sorted(unknown)}; '
                             f'expected any of {sorted(VIT_ARCHS[arch])}')
        settings = {**VIT_ARCHS[arch], **arch_overrides}
        if settings['image_size'] % settings['patch_size']:
            raise ValueError(f"image_size ({settings['image_size']}) must be a multiple of "
                             f"patch_size ({settings['patch_size']})")
        self.image_size = settings['image_size']
        try:
            from torchvision.models import VisionTransformer
        except ImportError as err:
            raise ImportError('ViTBinaryClassifier needs torchvision (pip install '
                              'torchvision, the release paired with your torch)') from err
        self.net = VisionTransformer(**settings, dropout=dropout,
                                     attention_dropout=attention_dropout, num_classes=1)

    def compute_logits(self, inputs):
        if inputs.shape[-2:] != (self.image_size, self.image_size):
            inputs = F.interpolate(inputs, size=(self.image_size, self.image_size),
                                   mode='bilinear', align_corners=False)
        return self.net(inputs)
