"""The paper's losses, plus a method (manipulation family) term.

total = activation_weight * activation + gamma * (segmentation + reconstruction_weight * reconstruction)
        + method_weight * method [+ dense_weight * dense] [+ margin_weight * margin] [+ twin_weight * twin]

The paper's recipe: activation_weight = reconstruction_weight = 1, no method head, dense_weight = margin_weight =
twin_weight = 0, and every pixel of the segmentation loss counted alike (edge_weight = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import ModelOutput


def activation_loss(activations: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """|a_real - y| + |a_fake - (1 - y)|, averaged over the batch (y = 1 for real faces).

    Pushes the true half's mean activation to 1 and the other half's to 0.
    """
    y = labels.float()
    per_face = (activations[:, 1] - y).abs() + (activations[:, 0] - (1.0 - y)).abs()
    return per_face.mean()


def dense_activation_loss(latent: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The activation loss per latent cell, for the fake half, supervised by the exact mask (an extension).

    The fake half's mean |activation| at each cell of the latent grid is pulled towards the fraction of that
    cell's pixels that were manipulated (0 everywhere for a real face). The paper's global activation loss alone
    gives the encoder one number per face to learn from; with exact masks from the forge, this gives it one per
    cell, so the fake half learns to fire *where* a face was changed, and its mean (the paper's activation)
    follows. Off by default (``dense_weight=0``), i.e. the paper's recipe.
    """
    b, c, h, w = latent.shape
    fake_half = latent[:, : c // 2].float().abs().mean(dim=1)  # B x h x w
    target = F.adaptive_avg_pool2d(masks.float()[:, None], (h, w))[:, 0]
    return (fake_half - target).abs().mean()


def margin_loss(activations: torch.Tensor, labels: torch.Tensor, scale: float = 8.0, focal: float = 0.0
                ) -> torch.Tensor:
    """Class-balanced binary cross-entropy on the margin between the halves (an extension).

    The paper's activation loss is an L1 distance: where the network cannot yet tell a face's class, its gradient
    pushes both halves towards the *more frequent* class's targets (the median), the same for every such face, so it
    says little about which faces look more fake than others, and with two fakes per real the fake half simply wins
    everywhere. Cross-entropy on ``sigmoid(scale * (a_fake - a_real))`` is a proper scoring rule: each face's
    gradient grows with how wrong its margin is, which is what ranking (AUC) needs. Reals and fakes get equal total
    weight whatever their proportion in the batch. Off by default (the paper's recipe).

    ``focal`` > 0 (Lin et al.'s focal loss, ICCV 2017) multiplies each face's term by ``(1 - p)^focal``, ``p`` the
    probability the margin gives its true class: a face already ranked right with confidence adds almost nothing,
    so the gradient goes to the faces still missed (small self-blends, faint reenactments) rather than to the many
    easy ones. 0 leaves the cross-entropy as it is.
    """
    is_fake = (labels == 0).float()
    logits = scale * (activations[:, 0].float() - activations[:, 1].float())
    n_fake = is_fake.sum().clamp(min=1.0)
    n_real = (1.0 - is_fake).sum().clamp(min=1.0)
    weights = is_fake / n_fake + (1.0 - is_fake) / n_real  # each class sums to 1
    per_face = F.binary_cross_entropy_with_logits(logits, is_fake, reduction="none")
    if focal:
        per_face = per_face * (1.0 - torch.exp(-per_face)).pow(focal)  # exp(-CE) is p of the true class
    return (weights * per_face).sum() / 2.0


def twin_loss(activations: torch.Tensor, labels: torch.Tensor, photos: torch.Tensor, scale: float = 8.0
              ) -> torch.Tensor:
    """Logistic ranking loss between each forgery and its own photo's real crop in the batch (an extension).

    ``photos`` (B,) names each face's source photo (negative: none). For every pair of a fake and a real face of the
    same photo, ``softplus(-scale * (m_fake - m_real))`` with ``m = a_fake - a_real`` the halves' margin, averaged over
    the pairs: the forgery must look more fake than its twin. The twins share the face, its pose and (with
    ``--paired-augment``) its augmentation, so the pair's gradient is the manipulation's alone, where the per-face
    losses also see everything else that sets two faces apart. 0 (with a gradient) when the batch holds no pair.
    """
    margin = activations[:, 0].float() - activations[:, 1].float()
    is_fake = labels == 0
    same = (photos[:, None] == photos[None, :]) & (photos[:, None] >= 0)
    pairs = same & is_fake[:, None] & ~is_fake[None, :]  # row: the fake, column: its real twin
    if not bool(pairs.any()):
        return margin.sum() * 0.0 + 0.0  # + 0.0: never -0.0
    gaps = (margin[:, None] - margin[None, :])[pairs]
    return F.softplus(-scale * gaps).mean()


def mask_edges(masks: torch.Tensor, width: int = 4) -> torch.Tensor:
    """1 on the pixels within ``width`` pixels of a mask's edge (on either side), 0 elsewhere: B x H x W.

    The band where a blended-in region meets the face it was blended into, which is where a blend leaves its
    traces (Face X-ray's "blending boundary", Li et al., CVPR 2020); all zeros for a real face's empty mask.
    """
    m = (masks > 0).float()[:, None]
    # the share of each pixel's (2 width + 1)^2 neighbourhood inside the mask (clipped at the crop's border): the
    # band is where that share is neither 0 nor 1; one average pool, 3.5 times faster on CPU than dilating and eroding
    share = F.avg_pool2d(m, 2 * width + 1, stride=1, padding=width, count_include_pad=False)
    return ((share > 0) & (share < 1)).float()[:, 0]


def segmentation_loss(seg_logits: torch.Tensor, masks: torch.Tensor, edge_weight: float = 0.0,
                      edge_width: int = 4) -> torch.Tensor:
    """Pixel-wise cross-entropy on the 2-channel mask (target 1 = manipulated).

    The authors apply ``nn.CrossEntropyLoss`` to *softmax outputs* (their segmenter ends in a Softmax); we feed
    logits, the standard and better-conditioned form of the same objective.

    ``edge_weight`` > 0 (an extension) counts the pixels near the mask's edge (``mask_edges``) 1 + edge_weight
    times, so that the decoder, and the encoder's half behind it, must get the blending boundary right rather than
    the bulk of the region; 0 is the paper's loss.
    """
    per_pixel = F.cross_entropy(seg_logits.float(), masks.long(), reduction="none")
    if edge_weight:
        per_pixel = per_pixel * (1.0 + edge_weight * mask_edges(masks, edge_width))
    return per_pixel.mean()


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the reconstruction (tanh output) and the normalised input, as the authors do."""
    return F.mse_loss(reconstruction.float(), target.float())


def method_loss(method_logits: torch.Tensor, methods: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the manipulation family, over fakes with a known family (``method >= 0``)."""
    known = methods >= 0
    if not bool(known.any()):
        return method_logits.sum() * 0.0 + 0.0  # + 0.0: never -0.0
    return F.cross_entropy(method_logits[known].float(), methods[known].long())


@dataclass
class LossTerms:
    total: torch.Tensor
    activation: torch.Tensor
    segmentation: torch.Tensor
    reconstruction: torch.Tensor
    method: torch.Tensor
    dense: torch.Tensor
    margin: torch.Tensor
    twin: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def multitask_loss(
    out: ModelOutput,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    methods: torch.Tensor | None = None,
    gamma: float = 1.0,
    method_weight: float = 0.5,
    dense_weight: float = 0.0,
    reconstruction_weight: float = 1.0,
    margin_weight: float = 0.0,
    activation_weight: float = 1.0,
    edge_weight: float = 0.0,
    photos: torch.Tensor | None = None,
    twin_weight: float = 0.0,
    focal: float = 0.0,
) -> LossTerms:
    act = activation_loss(out.activations, labels)
    seg = segmentation_loss(out.seg_logits, masks, edge_weight)
    zero = act * 0.0
    rec = reconstruction_loss(out.reconstruction, inputs) if out.reconstruction is not None else zero
    meth = (
        method_loss(out.method_logits, methods)
        if out.method_logits is not None and methods is not None
        else zero
    )
    dense = dense_activation_loss(out.latent, masks) if dense_weight else zero
    margin = margin_loss(out.activations, labels, focal=focal) if margin_weight else zero
    if twin_weight and photos is None:
        raise ValueError("twin_weight needs the faces' source photos")
    twin = twin_loss(out.activations, labels, photos) if twin_weight else zero
    total = (activation_weight * act + gamma * (seg + reconstruction_weight * rec) + method_weight * meth
             + dense_weight * dense + margin_weight * margin + twin_weight * twin)
    return LossTerms(total, act, seg, rec, meth, dense, margin, twin)
