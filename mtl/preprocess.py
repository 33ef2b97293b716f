"""From 256x256 RGB face crops (uint8) to the network's input, and back for display."""

from __future__ import annotations

import numpy as np
import torch

from .constants import FACE_SIZE, IMAGENET_MEAN, IMAGENET_STD

_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def to_model_input(crops) -> torch.Tensor:
    """A list (or NxHxWx3 array) of uint8 RGB crops -> Nx3xHxW float tensor in [0,1], ImageNet-normalised."""
    if isinstance(crops, np.ndarray) and crops.ndim == 3:
        crops = crops[None]
    if len(crops) == 0:
        return torch.empty(0, 3, FACE_SIZE, FACE_SIZE)
    batch = np.stack([np.asarray(c) for c in crops])
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB crops of shape HxWx3, got {batch.dtype} {batch.shape[1:]}")
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - _MEAN) / _STD


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Bx3xHxW (or 3xHxW) in [0,1] -> ImageNet-normalised."""
    mean, std = (_MEAN, _STD) if x.ndim == 4 else (_MEAN[0], _STD[0])
    return (x - mean.to(x.device)) / std.to(x.device)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize``, clipped to [0,1]."""
    mean, std = (_MEAN, _STD) if x.ndim == 4 else (_MEAN[0], _STD[0])
    return (x * std.to(x.device) + mean.to(x.device)).clamp(0, 1)
