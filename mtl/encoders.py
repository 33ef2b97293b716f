"""Encoders that turn a 256x256 face into the latent the ClassNSeg decoder reads.

A small registry in the spirit of timm's: ``build_encoder("classnseg")`` is the paper's own 9-layer encoder,
``build_encoder("timm/resnet18")`` (any timm model name after ``timm/``) wraps a timm backbone taken at stride 16
and projected by a 1x1 convolution to the latent width. Every encoder maps Bx3xHxW to BxCx(H/16)x(W/16).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_encoder(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_encoders() -> list[str]:
    return sorted(_REGISTRY) + ["timm/<any timm model with features_only>"]


def build_encoder(name: str, latent_channels: int = 128, pretrained: bool = False) -> nn.Module:
    if name.startswith("timm/"):
        return TimmEncoder(name[len("timm/"):], latent_channels, pretrained=pretrained)
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; choose one of {available_encoders()}")
    return _REGISTRY[name](latent_channels=latent_channels, pretrained=pretrained)


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

    def __init__(self, latent_channels: int = 128):
        super().__init__()
        widths = [8, 8, 16, 16, 32, 32, 64, 64, latent_channels]
        strides = [1, 2, 1, 2, 1, 2, 1, 2, 1]
        layers: list[nn.Module] = []
        cin = 3
        for cout, stride in zip(widths, strides):
            layers += _conv_bn_relu(cin, cout, stride)
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.apply(paper_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@register_encoder("classnseg")
def _classnseg(latent_channels: int = 128, pretrained: bool = False) -> nn.Module:
    if pretrained:
        raise ValueError("the paper's encoder has no ImageNet weights; load a ClassNSeg checkpoint instead")
    return ClassNSegEncoder(latent_channels)


class TimmEncoder(nn.Module):
    """A timm backbone's stride-16 feature map, projected to ``latent_channels``.

    The projection ends in BatchNorm + ReLU like the paper's last layer, so the latent is non-negative and its
    mean absolute value per half behaves as the paper's activation.
    """

    def __init__(self, model_name: str, latent_channels: int = 128, pretrained: bool = False):
        super().__init__()
        import timm

        probe = timm.create_model(model_name, pretrained=False, features_only=True)
        reductions = probe.feature_info.reduction()
        if 16 not in reductions:
            raise ValueError(f"timm model {model_name!r} has no stride-16 feature map (has {reductions})")
        index = reductions.index(16)
        del probe
        self.backbone = timm.create_model(
            model_name, pretrained=pretrained, features_only=True, out_indices=(index,)
        )
        width = self.backbone.feature_info.channels()[0]
        self.project = nn.Sequential(
            nn.Conv2d(width, latent_channels, 1), nn.BatchNorm2d(latent_channels), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone(x)[0])
