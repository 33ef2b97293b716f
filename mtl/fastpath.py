"""The fast inference path of ``ClassNSeg.predict(precision="auto")``.

What makes it fast, and why each step is sound:

- **No reconstruction branch**: it only serves training.
- **BatchNorm folded into the convolution before it** (eval mode: BN is an affine map per channel), so each
  layer is one convolution with a bias plus ReLU. In a timm backbone the pairs are a block's attributes, not the
  members of a Sequential; they are folded where the folded copy is checked to compute what the original does.
- **Subnormal weights flushed to zero.** The authors' released weights hold >100k subnormal floats (dead
  channels whose running variance collapsed to ~1e-45 leave tiny weights behind). Arithmetic on subnormals takes
  a slow microcode path on x86 CPUs and made every convolution several times slower. A subnormal weight is below
  1.2e-38 in magnitude, so its contribution to any activation is below float32's resolution: zeroing it changes no
  output bit that matters, and it is done once on a private copy of the weights (no global FTZ/DAZ flags set).
- **Transposed convolutions rewritten as ordinary ones** (oneDNN's deconvolution is several times slower than
  its convolution, 5.7 vs 0.5 ms for the segmenter's last 256x256 layer here): a stride-1 transposed conv is
  a conv with the kernel flipped and its in/out axes swapped; a stride-2 one (k3, pad 1, output_padding 1) is
  a 2x2 conv producing the four output phases, then a pixel shuffle (the "sub-pixel" identity). Both are exact
  up to float rounding.
- **A TensorFlow-padded backbone run turned by 180 degrees** (timm's ``tf_`` models, such as the shipped
  EfficientNet-Lite0): their stride-2 convolutions pad more after than before, which costs a padded copy of the
  input each time; on the face turned around (kernels turned too) the same windows need only the symmetric padding
  a convolution does itself (``half_turned``). Exact up to float rounding, and checked on a probe when built.
- **Channels-last memory format and bf16 autocast** where the CPU has native bf16 (AVX512-BF16 / AMX; oneDNN
  kernels), fp32 elsewhere. For the paper's encoder the first five layers (256 to 64 px) stay in fp32: rounding
  the input and the early high-resolution features to bf16's 8-bit mantissa was what moved mask edges (mask IoU
  with fp32 0.968 on the authors' fake crop with all-bf16, 0.995 with this split, for ~0.3 ms more; measured by
  bench/bench_model.py). Activations and calibration are computed in fp32 from the latent.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import ClassNSegEncoder
from .model import gate_latent

FP32_PREFIX_LAYERS = 15  # modules of ClassNSegEncoder.layers kept in fp32: conv+bn+relu x 5

_TINY = torch.finfo(torch.float32).tiny  # smallest normal float32


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # older builds without the op
        return False


def _fold_bn(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """A copy of ``conv`` whose output equals ``bn(conv(x))`` in eval mode."""
    fused = copy.deepcopy(conv)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    weight = conv.weight
    if isinstance(conv, nn.ConvTranspose2d):  # weight: in x out/groups x k x k
        if conv.groups != 1:
            raise NotImplementedError("grouped transposed convolutions are not folded")
        weight = weight * scale[None, :, None, None]
    else:  # weight: out x in/groups x k x k
        weight = weight * scale[:, None, None, None]
    fused.weight = nn.Parameter(weight.detach().clone())
    fused.bias = nn.Parameter(((bias - bn.running_mean) * scale + bn.bias).detach().clone())
    return fused


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a norm layer once its affine map is folded away: timm's ``BatchNormAct2d`` runs its dropout
    and activation after the normalisation, a plain BatchNorm2d nothing."""
    act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
    rest = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*rest) if rest else nn.Identity()


def _fold_adjacent(module: nn.Module) -> None:
    """Fold each BatchNorm2d child registered right after a convolution child of ``module`` (in place)."""
    names = list(module._modules)
    for conv_name, bn_name in zip(names, names[1:]):
        conv, bn = module._modules[conv_name], module._modules[bn_name]
        if (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels and bn.track_running_stats):
            module._modules[conv_name] = _fold_bn(conv, bn)
            module._modules[bn_name] = _after_norm(bn)


def fold_batchnorm(module: nn.Module, sequential_only: bool = True) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a convolution inside an ``nn.Sequential`` (in place): exact,
    since a Sequential runs its children in order.

    ``sequential_only=False`` also folds pairs of attributes registered one after the other (timm's blocks:
    ``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ...). Registration order is not data flow in general, so that is
    only sound where the result is checked against the original (``checked_backbone``)."""
    for child in module.children():
        fold_batchnorm(child, sequential_only)
    if isinstance(module, nn.Sequential) or not sequential_only:
        _fold_adjacent(module)
    return module


def agrees(candidate: nn.Module, probe: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether ``candidate`` (a rewritten, channels-last copy of a module) gives ``expected``, the module's own
    output on ``probe``, to float rounding."""
    with torch.no_grad():
        got = candidate(probe.contiguous(memory_format=torch.channels_last))
    tolerance = 1e-4 * max(1.0, expected.abs().max().item())
    return got.shape == expected.shape and (got - expected).abs().max().item() <= tolerance


def checked_backbone(original: nn.Module, prepared: nn.Module, probe: torch.Tensor) -> nn.Module:
    """A timm backbone's fast copy: ``prepared`` (``original`` through ``_prepare``) with its attribute pairs folded,
    then turned by 180 degrees (``half_turned``), each rewrite kept only where the result still computes what
    ``original`` (in eval mode) does on ``probe``."""
    with torch.no_grad():
        expected = copy.deepcopy(original).eval()(probe)
    folded = fold_batchnorm(copy.deepcopy(prepared), sequential_only=False)
    if agrees(folded, probe, expected):
        prepared = folded
    turned = half_turned(prepared)
    if turned is not None and agrees(turned, probe, expected):
        prepared = turned
    return prepared


class HalfTurn(nn.Module):
    """``inner`` run on its input turned by 180 degrees, and its output turned back (``half_turned``)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.flip(-2, -1)).flip(-2, -1)


def half_turned(module: nn.Module) -> nn.Module | None:
    """A copy of ``module`` whose TensorFlow-style "same" convolutions need no padded copy of their input, or None.

    timm's ``tf_`` backbones pad a stride-2 convolution's input more after than before (the window of output ``j``
    starts at input ``2j`` on an even side), and since a convolution pads only symmetrically, ``Conv2dSame`` makes a
    padded copy of every such input (on 2 cores of an AVX2-only CPU a fifth of EfficientNet-Lite0's time a face).
    Turned by 180 degrees, that window starts one step before an even index, which is where a convolution padded by
    ``k // 2`` on both sides puts it (any odd kernel, either parity of side). So the copy runs every layer on the
    face turned around, with each kernel turned too (a convolution commutes with turning input and kernel alike;
    normalisation, activations and sums are per pixel), and the latent is turned back at the end. Only where every
    convolution has an odd kernel and no dilation, and every strided one is a ``Conv2dSame`` of stride 2 (a stride-2
    convolution padded symmetrically has the opposite problem): None otherwise. Callers check the result on a probe
    (``checked_backbone``), since other layers (pooling) may not commute with the turn."""
    turned = copy.deepcopy(module)
    for parent in list(turned.modules()):
        for name, conv in list(parent.named_children()):
            if not isinstance(conv, nn.Conv2d):
                continue
            k = conv.kernel_size
            if k[0] % 2 == 0 or k[1] % 2 == 0 or conv.dilation != (1, 1) or max(conv.stride) > 2:
                return None
            same = type(conv).__name__ == "Conv2dSame"
            if not same and (conv.stride != (1, 1) or conv.padding != (k[0] // 2, k[1] // 2)):
                return None  # a strided convolution padded symmetrically would lose its windows when turned
            if same:  # the turned window is where symmetric padding puts it: no padded copy
                plain = nn.Conv2d(conv.in_channels, conv.out_channels, k, conv.stride, (k[0] // 2, k[1] // 2),
                                  groups=conv.groups, bias=conv.bias is not None)
                plain.weight, plain.bias = conv.weight, conv.bias
                setattr(parent, name, plain)
                conv = plain
            conv.weight = nn.Parameter(conv.weight.detach().flip(-2, -1).contiguous(), requires_grad=False)
    return HalfTurn(turned.to(memory_format=torch.channels_last))


class SubPixelConv(nn.Module):
    """Exact replacement of ``ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)``.

    Along one axis output ``2m`` takes ``w[1]*x[m]`` and output ``2m+1`` takes ``w[2]*x[m] + w[0]*x[m+1]``; a 2x2
    convolution over the input (zero-padded right and bottom) computes the four phases, a pixel shuffle
    interleaves them.
    """

    _TAP = {(0, 0): 1, (0, 1): None, (1, 0): 2, (1, 1): 0}  # (output phase, input offset) -> kernel tap

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        w = deconv.weight.detach()  # in x out x 3 x 3
        cin, cout = w.shape[:2]
        phases = torch.zeros(cout, 2, 2, cin, 2, 2, dtype=w.dtype)
        for a in (0, 1):
            for b in (0, 1):
                for di in (0, 1):
                    for dj in (0, 1):
                        ki, kj = self._TAP[(a, di)], self._TAP[(b, dj)]
                        if ki is not None and kj is not None:
                            phases[:, a, b, :, di, dj] = w[:, :, ki, kj].t()
        self.conv = nn.Conv2d(cin, cout * 4, 2, bias=deconv.bias is not None)
        self.conv.weight = nn.Parameter(phases.reshape(cout * 4, cin, 2, 2))
        if deconv.bias is not None:
            self.conv.bias = nn.Parameter(deconv.bias.detach().repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(F.pad(x, (0, 1, 0, 1))), 2)


def _deconv_as_conv(deconv: nn.ConvTranspose2d) -> nn.Module | None:
    geometry = (deconv.kernel_size, deconv.padding, deconv.groups, deconv.dilation)
    if geometry != ((3, 3), (1, 1), 1, (1, 1)):
        return None
    if deconv.stride == (1, 1) and deconv.output_padding == (0, 0):
        conv = nn.Conv2d(deconv.in_channels, deconv.out_channels, 3, padding=1, bias=deconv.bias is not None)
        conv.weight = nn.Parameter(deconv.weight.detach().flip(2, 3).transpose(0, 1).contiguous())
        if deconv.bias is not None:
            conv.bias = nn.Parameter(deconv.bias.detach().clone())
        return conv
    if deconv.stride == (2, 2) and deconv.output_padding == (1, 1):
        return SubPixelConv(deconv)
    return None


def rewrite_transposed_convs(module: nn.Module) -> nn.Module:
    """Replace, in place, every ConvTranspose2d of the paper's geometries inside ``nn.Sequential`` containers."""
    for child in module.children():
        rewrite_transposed_convs(child)
    if isinstance(module, nn.Sequential):
        for i, layer in enumerate(list(module)):
            if isinstance(layer, nn.ConvTranspose2d):
                replacement = _deconv_as_conv(layer)
                if replacement is not None:
                    module[i] = replacement
    return module


def flush_subnormal_weights(module: nn.Module) -> int:
    """Zero every parameter and buffer entry smaller in magnitude than the smallest normal float32."""
    flushed = 0
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tiny = (tensor.abs() < _TINY) & (tensor != 0)
                flushed += int(tiny.sum())
                tensor[tiny] = 0.0
    return flushed


def _prepare(module: nn.Module | None) -> nn.Module | None:
    if module is None:
        return None
    module = rewrite_transposed_convs(fold_batchnorm(copy.deepcopy(module).eval()))
    flush_subnormal_weights(module)
    for layer in module.modules():
        if isinstance(layer, nn.ReLU):
            layer.inplace = True  # saves an allocation and a pass over memory per layer
    return module.to(memory_format=torch.channels_last).requires_grad_(False)


class FastNetwork:
    """A folded, inference-only copy of a ClassNSeg (a plain object so it never enters the state dict)."""

    def __init__(self, model):
        self.model = model
        if isinstance(model.encoder, ClassNSegEncoder):
            encoder = _prepare(model.encoder)
            self.encoder_fp32 = encoder.layers[:FP32_PREFIX_LAYERS]
            self.encoder = encoder.layers[FP32_PREFIX_LAYERS:]
        else:  # a timm backbone: its conv/BN pairs are attributes, its padding maybe TensorFlow's
            probe = model.encoder_input(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
            self.encoder_fp32 = nn.Identity()
            self.encoder = checked_backbone(model.encoder, _prepare(model.encoder), probe)
        self.trunk = _prepare(model.decoder.shared)
        self.segmenter = _prepare(model.decoder.segmenter)
        self.method_head = _prepare(model.method_head)

    def _autocast(self, x: torch.Tensor, precision: str):
        use_bf16 = precision == "bf16" or (precision == "auto" and x.device.type == "cpu" and cpu_has_bf16())
        return torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    def encode(self, x: torch.Tensor, precision: str = "auto") -> torch.Tensor:
        """The latent (B x C x h x w) of a batch of normalised faces."""
        x = self.model.encoder_input(x.float())  # residuals in fp32: bf16 would round them away
        x = self.encoder_fp32(x.contiguous(memory_format=torch.channels_last))
        with self._autocast(x, precision):
            return self.encoder(x)

    def decode(self, latent: torch.Tensor, keep: torch.Tensor, precision: str = "auto"):
        """Segmentation logits of the half named by ``keep`` (REAL=1 / FAKE=0), and the method head's logits."""
        with self._autocast(latent, precision):
            logits = self.segmenter(self.trunk(gate_latent(latent, keep)))
            method_logits = self.method_head(latent) if self.method_head is not None else None
        return logits, method_logits


def fast_network(model) -> FastNetwork:
    return FastNetwork(model)
