"""ClassNSeg: the multi-task network of Nguyen et al. (BTAS 2019).

An encoder maps a face to a latent whose channels are split in two halves: channels ``0..C/2-1`` are the
"fake" half, ``C/2..C-1`` the "real" half (the authors' folders sort ``altered`` (0) before ``original`` (1)).
The activation of a half is the mean absolute value of its channels; the stronger half decides the verdict.
Only the winning half (the other zeroed) goes to the Y-shaped decoder: a shared trunk, then a segmentation
branch (2 channels: pristine / manipulated) and a reconstruction branch (3 channels, tanh) used in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .constants import CONFIG_NAME, FAMILIES, WEIGHTS_NAME
from .encoders import NoiseResiduals, build_encoder, paper_init

REAL, FAKE = 1, 0  # class indices, as the paper's ImageFolder assigns them


def _deconv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(cin, cout, 3, stride=stride, padding=1, output_padding=stride - 1),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


def _branch(out_channels: int) -> list[nn.Module]:
    """One arm of the Y: two x2 upsamplings, ending in a plain transposed conv (no BN, no activation)."""
    return [
        *_deconv_bn_relu(32, 16, 1),
        *_deconv_bn_relu(16, 16, 2),
        *_deconv_bn_relu(16, 8, 1),
        *_deconv_bn_relu(8, 8, 2),
        nn.ConvTranspose2d(8, out_channels, 3, stride=1, padding=1),
    ]


class YDecoder(nn.Module):
    """The paper's Y-shaped decoder: 16x16 latent -> 256x256 segmentation logits and reconstruction."""

    def __init__(self, latent_channels: int = 128):
        super().__init__()
        self.shared = nn.Sequential(
            *_deconv_bn_relu(latent_channels, 64, 1),
            *_deconv_bn_relu(64, 64, 2),
            *_deconv_bn_relu(64, 32, 1),
            *_deconv_bn_relu(32, 32, 2),
        )
        self.segmenter = nn.Sequential(*_branch(2))  # logits; the authors apply softmax inside the net
        self.reconstructor = nn.Sequential(*_branch(3), nn.Tanh())
        self.apply(paper_init)

    def forward(self, latent: torch.Tensor, reconstruct: bool = True):
        trunk = self.shared(latent)
        seg_logits = self.segmenter(trunk)
        reconstruction = self.reconstructor(trunk) if reconstruct else None
        return seg_logits, reconstruction


@dataclass
class ModelOutput:
    """What a training forward pass returns (everything differentiable)."""

    latent: torch.Tensor  # B x C x h x w
    activations: torch.Tensor  # B x 2: (fake half, real half)
    seg_logits: torch.Tensor  # B x 2 x H x W, channel 1 = manipulated
    reconstruction: torch.Tensor | None  # B x 3 x H x W in [-1, 1]
    method_logits: torch.Tensor | None  # B x len(FAMILIES)


@dataclass
class Prediction:
    """What ``ClassNSeg.predict`` returns (no gradients, on the CPU)."""

    p_fake: torch.Tensor  # (B,) calibrated probability that the face is manipulated
    is_fake: torch.Tensor  # (B,) bool, p_fake > threshold
    activations: torch.Tensor  # (B, 2) mean |latent| of the fake and the real half (uncalibrated, as in the paper)
    mask: torch.Tensor  # (B, H, W) probability that each pixel is manipulated, decoded from the winning half
    method_probs: torch.Tensor | None  # (B, len(FAMILIES)) or None without a method head
    margin: torch.Tensor | None = None  # (B,) the statistic the calibration maps to p_fake (a_fake - a_real here)

    def __len__(self) -> int:
        return int(self.p_fake.shape[0])


def half_cell_activations(latent: torch.Tensor) -> torch.Tensor:
    """Mean absolute activation of the fake half and the real half at each cell of the latent grid: B x 2 x cells
    (fp32 whatever the input)."""
    b, c, h, w = latent.shape
    return latent.float().reshape(b, 2, c // 2, h * w).abs().mean(dim=2)


def half_activations(latent: torch.Tensor) -> torch.Tensor:
    """Mean absolute activation of the fake half and the real half: B x 2 (fp32 whatever the input); the mean of
    ``half_cell_activations`` over the cells, summed in one pass so that scores stay bit for bit as calibrated."""
    b, c, h, w = latent.shape
    halves = latent.float().reshape(b, 2, c // 2, h * w)
    return halves.abs().mean(dim=(2, 3))


def gate_latent(latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero the half not named by ``keep`` (B, values REAL=1 or FAKE=0), as the paper does before decoding."""
    b, c, h, w = latent.shape
    onehot = F.one_hot(keep.long(), 2).to(latent.dtype)  # B x 2: column 0 keeps the fake half
    return (latent.reshape(b, 2, c // 2, h, w) * onehot[:, :, None, None, None]).reshape(b, c, h, w)


class PlattCalibration:
    """The map from a detector's score to a probability, ``p_fake = sigmoid(scale * score + bias)``, and the threshold
    on it: shared by ``ClassNSeg`` (score: the activation difference) and ``mtl.ensemble.Ensemble`` (score: the mean
    of its members' calibrated log-odds). ``train.calibrate`` fits both the same way."""

    calibration_scale: float = 1.0
    calibration_bias: float = 0.0
    threshold: float = 0.5

    def set_calibration(self, scale: float, bias: float, threshold: float | None = None) -> None:
        self.calibration_scale, self.calibration_bias = float(scale), float(bias)
        if threshold is not None:
            self.threshold = float(threshold)

    def calibrated_log_odds(self, score: torch.Tensor) -> torch.Tensor:
        """``scale * score + bias``: the calibrated log-odds of fake."""
        return self.calibration_scale * score + self.calibration_bias


class ClassNSeg(
    nn.Module,
    PlattCalibration,
    PyTorchModelHubMixin,
    library_name="mtl",
    repo_url="https://arxiv.org/abs/1906.06876",
    paper_url="https://arxiv.org/abs/1906.06876",
    tags=["face-forensics", "deepfake-detection", "image-segmentation"],
):
    """The multi-task detector and segmenter. Constructor arguments are the checkpoint's ``config.json``.

    ``calibration_scale`` and ``calibration_bias`` map the activation difference to a probability:
    ``p_fake = sigmoid(scale * (a_fake - a_real) + bias)``. The identity (1, 0) is exactly the paper's softmax
    over the two activations, which squeezes probabilities into about 0.27-0.73; a trained checkpoint stores a
    map fitted on its validation split. A face is judged fake when ``p_fake > threshold``; with the identity map
    and threshold 0.5 that is the paper's rule (the fake half strictly stronger; ties are real).
    """

    def __init__(
        self,
        encoder: str = "classnseg",
        latent_channels: int = 128,
        method_head: bool = False,
        calibration_scale: float = 1.0,
        calibration_bias: float = 0.0,
        threshold: float = 0.5,
        pretrained: bool = False,
        name: str = "classnseg",
        description: str = "",
        noise_residuals: bool = False,
        test_time_flip: bool = False,
        deep_stage: bool = False,
    ):
        super().__init__()
        if latent_channels % 2:
            raise ValueError("latent_channels must be even: the latent is split into two halves")
        self.encoder_name = encoder
        self.latent_channels = latent_channels
        self.set_calibration(calibration_scale, calibration_bias, threshold)
        self.name = name
        self.description = description
        # optional: the face's high-pass residuals stacked after its RGB channels before the encoder
        self.residuals = NoiseResiduals() if noise_residuals else None
        # optional: predict() scores each face and its mirror image and averages them (the calibration must be fitted
        # with the same setting, see train.calibrate --test-time-flip)
        self.test_time_flip = bool(test_time_flip)
        in_channels = 3 + (NoiseResiduals.CHANNELS if noise_residuals else 0)
        # optional (timm encoders): the backbone's stride-32 stage feeds the latent too (mtl.encoders.TimmEncoder)
        self.deep_stage = bool(deep_stage)
        self.encoder = build_encoder(encoder, latent_channels, pretrained=pretrained, in_channels=in_channels,
                                     deep_stage=self.deep_stage)
        self.decoder = YDecoder(latent_channels)
        self.method_head = (
            nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(latent_channels, 128),
                nn.ReLU(),
                nn.Dropout(0.2),
                nn.Linear(128, len(FAMILIES)),
            )
            if method_head
            else None
        )
        self._fast = None  # the folded inference network (a plain object, not a submodule), built on first use

    # -- configuration -------------------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        return {
            "encoder": self.encoder_name,
            "latent_channels": self.latent_channels,
            "method_head": self.method_head is not None,
            "calibration_scale": self.calibration_scale,
            "calibration_bias": self.calibration_bias,
            "threshold": self.threshold,
            "name": self.name,
            "description": self.description,
            **({"noise_residuals": True} if self.residuals is not None else {}),
            **({"test_time_flip": True} if self.test_time_flip else {}),
            **({"deep_stage": True} if self.deep_stage else {}),
        }

    def _save_pretrained(self, save_directory) -> None:
        """Weights as safetensors and the *current* config (the mixin would write the constructor's arguments,
        missing a calibration fitted after construction)."""
        import json

        from safetensors.torch import save_file

        weights = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}  # channels-last in training
        save_file(weights, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location="cpu", strict=True, **model_kwargs):
        """Safetensors only (never unpickles), strict key matching so renamed weights fail loudly."""
        from .hub import resolve_weights  # here, not at the top: mtl.hub imports this module

        from safetensors.torch import load_model

        model = cls(**model_kwargs)
        weights = resolve_weights(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                  local_files_only=local_files_only, token=token)
        load_model(model, weights, strict=True, device=map_location)
        return model.eval()

    def log_odds(self, activations: torch.Tensor) -> torch.Tensor:
        """The calibrated log-odds of fake, ``scale * (a_fake - a_real) + bias``, from the (B, 2) activations."""
        return self.calibrated_log_odds(activations[:, 0] - activations[:, 1])

    def calibrate(self, activations: torch.Tensor) -> torch.Tensor:
        """p_fake from the (B, 2) activations."""
        return torch.sigmoid(self.log_odds(activations))

    # -- training / reference forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None, reconstruct: bool = True) -> ModelOutput:
        """Full network. ``gate`` (B,) names the half to decode (REAL=1 / FAKE=0); in training pass the true label.

        Without ``gate`` the stronger half is decoded, as the authors do at test time.
        """
        latent = self.encoder(self.encoder_input(x))
        activations = half_activations(latent)
        if gate is None:
            gate = (activations[:, 1] >= activations[:, 0]).long()  # the paper: real when a_real >= a_fake
        seg_logits, reconstruction = self.decoder(gate_latent(latent, gate), reconstruct=reconstruct)
        method_logits = self.method_head(latent) if self.method_head is not None else None
        return ModelOutput(latent, activations, seg_logits, reconstruction, method_logits)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder reads: the normalised face, with its noise residuals when the model uses them."""
        return x if self.residuals is None else self.residuals(x)

    def train(self, mode: bool = True):
        self._fast = None  # weights may change: rebuild the folded network on next use
        return super().train(mode)

    # -- inference -----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, x: torch.Tensor, precision: str = "auto") -> Prediction:
        """Verdicts, calibrated probabilities and masks for a batch of normalised 256x256 faces.

        ``precision="fp32"`` runs the exact network (eval mode, float32); ``"auto"`` the fast path of
        ``mtl.fastpath`` (BatchNorm folded, no reconstruction branch, channels-last, bf16 where the CPU has it).
        With ``test_time_flip`` each face is also scored mirrored: the two activations are averaged before the
        calibration, the winning half of both latents is decoded, and the masks (the mirror's flipped back) and method
        logits are averaged.
        """
        network, latent, activations = self.encode_views(x, precision)
        p_fake = self.calibrate(activations)
        is_fake = p_fake > self.threshold
        mask, method_logits = self.decode_views(network, latent, (~is_fake).long(), precision)
        method_probs = torch.softmax(method_logits, dim=1) if method_logits is not None else None
        margin = (activations[:, 0] - activations[:, 1]).float()
        return Prediction(p_fake.float(), is_fake, activations.float(), mask.float(), method_probs, margin)

    def encode_views(self, x: torch.Tensor, precision: str = "auto"):
        """``predict``'s first stage: (network, latent, activations (B, 2)). The latent holds the mirrored faces after
        the faces themselves with ``test_time_flip``, whose activations are then the two views' mean."""
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a Bx3xHxW batch, got shape {tuple(x.shape)}")
        if self.training:
            self.eval()
        if precision == "fp32":
            network = _ExactNetwork(self)
        else:
            from .fastpath import fast_network

            if self._fast is None:
                self._fast = fast_network(self)
            network = self._fast
        b = x.shape[0]
        views = torch.cat([x, x.flip(-1)]) if self.test_time_flip else x
        latent = network.encode(views, precision)
        activations = half_activations(latent)
        if self.test_time_flip:
            activations = (activations[:b] + activations[b:]) / 2
        return network, latent, activations

    def decode_views(self, network, latent: torch.Tensor, keep: torch.Tensor, precision: str = "auto"):
        """``predict``'s second stage: (mask (B, H, W) in [0, 1], method logits or None) from ``encode_views``'
        latent, decoding the half ``keep`` names (REAL=1 / FAKE=0) of each face (and of its mirror, flipped back and
        averaged)."""
        flip = self.test_time_flip
        logits, method_logits = network.decode(latent, keep.repeat(2) if flip else keep, precision)
        mask = torch.sigmoid(logits[:, 1].float() - logits[:, 0].float())  # softmax over two channels: 1 = manipulated
        if method_logits is not None:
            method_logits = method_logits.float()
        if flip:
            b = keep.shape[0]
            mask = (mask[:b] + mask[b:].flip(-1)) / 2
            method_logits = None if method_logits is None else (method_logits[:b] + method_logits[b:]) / 2
        return mask.float(), method_logits


class _ExactNetwork:
    """``predict(precision="fp32")``'s two stages on the model itself, in float32."""

    def __init__(self, model: ClassNSeg):
        self.model = model

    def encode(self, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        return self.model.encoder(self.model.encoder_input(x.float()))

    def decode(self, latent: torch.Tensor, keep: torch.Tensor, precision: str = "fp32"):
        seg_logits, _ = self.model.decoder(gate_latent(latent, keep), reconstruct=False)
        method_head = self.model.method_head
        return seg_logits, (method_head(latent) if method_head is not None else None)
