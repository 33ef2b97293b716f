"""The ClassNSeg network: shapes, the gating semantics, losses, save/load, timm backbones, the fast path."""

import json
import math

import pytest
import torch
from torch import nn

from mtl import ClassNSeg, load_model
from mtl.fastpath import SubPixelConv, fold_batchnorm, rewrite_transposed_convs
from mtl.losses import (activation_loss, mask_edges, multitask_loss, reconstruction_loss, segmentation_loss,
                        twin_loss)
from mtl.model import FAKE, REAL, gate_latent, half_activations


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClassNSeg().eval()


def test_shapes_of_the_paper_network(model):
    out = model(torch.randn(2, 3, 256, 256))
    assert out.latent.shape == (2, 128, 16, 16)
    assert out.activations.shape == (2, 2)
    assert out.seg_logits.shape == (2, 2, 256, 256)
    assert out.reconstruction.shape == (2, 3, 256, 256)
    assert out.method_logits is None
    assert float(out.reconstruction.detach().abs().max()) <= 1.0  # tanh


def test_parameter_count_is_the_papers_small_network(model):
    n = sum(p.numel() for p in model.parameters())
    assert 200_000 < n < 400_000


def test_first_half_is_fake_second_half_is_real():
    latent = torch.zeros(1, 4, 2, 2)
    latent[:, :2] = 3.0  # fake half strong
    latent[:, 2:] = -1.0
    act = half_activations(latent)
    assert act.tolist() == [[3.0, 1.0]]
    kept_real = gate_latent(latent, torch.tensor([REAL]))
    assert (kept_real[:, :2] == 0).all() and (kept_real[:, 2:] == -1).all()
    kept_fake = gate_latent(latent, torch.tensor([FAKE]))
    assert (kept_fake[:, :2] == 3).all() and (kept_fake[:, 2:] == 0).all()


class _FixedLatent(nn.Module):
    """An encoder stand-in whose latent has a chosen strength per half (per sample)."""

    def __init__(self, strengths):
        super().__init__()
        self.strengths = torch.tensor(strengths, dtype=torch.float32)  # B x 2 (fake, real)

    def forward(self, x):
        b = x.shape[0]
        latent = torch.ones(b, 128, 16, 16)
        latent[:, :64] *= self.strengths[:b, 0, None, None, None]
        latent[:, 64:] *= self.strengths[:b, 1, None, None, None]
        return latent


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_the_stronger_half_decides_and_alone_is_decoded(precision):
    torch.manual_seed(0)
    m = ClassNSeg().eval()
    m.encoder = _FixedLatent([[0.9, 0.2], [0.1, 0.7], [0.5, 0.5]])
    x = torch.zeros(3, 3, 256, 256)
    pred = m.predict(x, precision=precision)
    assert pred.is_fake.tolist() == [True, False, False]  # a tie is real, as in the authors' test code
    expected = torch.sigmoid(torch.tensor([0.7, -0.6, 0.0]))  # identity calibration = the paper's softmax
    assert torch.allclose(pred.p_fake, expected, atol=1e-4)
    # the decoder saw only the winning half: decode by hand and compare
    with torch.no_grad():
        latent = m.encoder(x)
        seg, _ = m.decoder(gate_latent(latent, torch.tensor([FAKE, REAL, REAL])), reconstruct=False)
    tol = 1e-4 if precision == "fp32" else 0.05
    assert torch.allclose(pred.mask, torch.softmax(seg, 1)[:, 1], atol=tol)


def test_calibration_maps_the_margin():
    m = ClassNSeg()
    m.set_calibration(scale=10.0, bias=-1.0, threshold=0.8)
    p = m.calibrate(torch.tensor([[0.6, 0.4], [0.4, 0.6]]))
    assert torch.allclose(p, torch.sigmoid(torch.tensor([1.0, -3.0])))
    assert m.config["threshold"] == 0.8


def test_activation_loss_hand_computed():
    act = torch.tensor([[0.2, 0.9], [0.5, 0.3]])  # (fake, real)
    labels = torch.tensor([1, 0])  # real, fake
    # real face: |0.9 - 1| + |0.2 - 0| = 0.3 ; fake face: |0.3 - 0| + |0.5 - 1| = 0.8 ; mean = 0.55
    assert activation_loss(act, labels).item() == pytest.approx(0.55)


def test_segmentation_and_reconstruction_losses_hand_computed():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1, 0, 0] = 2.0  # pixel 0 says manipulated, pixel 1 undecided
    target = torch.tensor([[[1, 0]]])
    expected = (-torch.log_softmax(torch.tensor([0.0, 2.0]), 0)[1] + torch.log(torch.tensor(2.0))) / 2
    assert segmentation_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert reconstruction_loss(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)).item() == pytest.approx(1.0)


def test_mask_edges_mark_the_band_around_a_masks_edge_and_nothing_on_a_real_face():
    masks = torch.zeros(2, 9, 9, dtype=torch.long)
    masks[0, 3:6, 3:6] = 1  # a 3x3 square in the middle of the first mask; the second is a real face's
    edges = mask_edges(masks, width=1)
    expected = torch.zeros(9, 9)
    expected[2:7, 2:7] = 1  # one pixel either side of the edge: the 5x5 around the square...
    expected[4, 4] = 0  # ...less the centre, more than one pixel inside
    assert torch.equal(edges[0], expected)
    assert not edges[1].any()
    top = torch.zeros(1, 9, 9, dtype=torch.long)
    top[0, :2] = 1  # a mask along the crop's border: the border is not an edge, only the mask's lower side is
    assert mask_edges(top, width=1)[0].sum(1).tolist() == [0, 9, 9, 0, 0, 0, 0, 0, 0]


def test_edge_weight_counts_the_pixels_near_the_edge_more():
    masks = torch.zeros(1, 9, 9, dtype=torch.long)
    masks[0, 3:6, 3:6] = 1
    logits = torch.randn(1, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    per_pixel = torch.nn.functional.cross_entropy(logits, masks, reduction="none")[0]
    band = mask_edges(masks, width=4)[0]
    expected = (per_pixel * (1 + 3.0 * band)).mean()
    assert segmentation_loss(logits, masks, edge_weight=3.0, edge_width=4).item() == pytest.approx(expected.item())
    assert segmentation_loss(logits, masks, edge_weight=0.0).item() == pytest.approx(per_pixel.mean().item())
    assert segmentation_loss(logits, masks, edge_weight=3.0).item() > per_pixel.mean().item()


def test_multitask_loss_combines_terms(model):
    x = torch.randn(2, 3, 64, 64)
    m = ClassNSeg(method_head=True)
    labels = torch.tensor([1, 0])
    out = m(x, gate=labels)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    terms = multitask_loss(out, x, labels, masks, methods=torch.tensor([-1, 2]), gamma=0.5, method_weight=0.25)
    expected = terms.activation + 0.5 * (terms.segmentation + terms.reconstruction) + 0.25 * terms.method
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    terms.total.backward()
    assert m.method_head[-1].weight.grad is not None


def test_save_load_round_trip_keeps_weights_and_calibration(tmp_path):
    torch.manual_seed(1)
    m = ClassNSeg(method_head=True, name="tiny-test").eval()
    m.set_calibration(4.0, 0.5, threshold=0.7)
    m.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["calibration_scale"] == 4.0 and config["threshold"] == 0.7 and config["method_head"] is True
    loaded = load_model(tmp_path / "ckpt")
    x = torch.randn(2, 3, 256, 256)
    a, b = m.predict(x, "fp32"), loaded.predict(x, "fp32")
    assert torch.equal(a.p_fake, b.p_fake) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.method_probs, b.method_probs)


def test_loading_is_strict_about_weight_names(tmp_path):
    from safetensors.torch import load_file, save_file

    ClassNSeg().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["decoder.renamed.weight"] = state.pop("decoder.reconstructor.0.weight")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="renamed|reconstructor"):
        load_model(tmp_path)


def test_timm_backbone_forward_and_predict():
    pytest.importorskip("timm")
    m = ClassNSeg(encoder="timm/resnet18", latent_channels=64).eval()
    x = torch.randn(2, 3, 256, 256)
    out = m(x)
    assert out.latent.shape == (2, 64, 16, 16)
    assert out.seg_logits.shape == (2, 2, 256, 256)
    exact, fast = m.predict(x, "fp32"), m.predict(x, "auto")
    assert fast.mask.shape == (2, 256, 256)
    assert torch.allclose(exact.activations, fast.activations, rtol=0.05, atol=1e-3)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown encoder"):
        ClassNSeg(encoder="nope")


def test_fast_path_fp32_matches_the_exact_network(fast_path_in_fp32):
    torch.manual_seed(0)
    m = ClassNSeg().eval()
    for bn in m.modules():  # non-trivial BatchNorm statistics, so folding is really exercised
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.data.uniform_(-0.1, 0.1)
    x = torch.randn(3, 3, 256, 256)
    exact = m.predict(x, "fp32")
    fast = fast_path_in_fp32(m, x)
    assert torch.allclose(fast.activations, exact.activations, rtol=1e-4, atol=1e-6)
    assert torch.equal(fast.is_fake, exact.is_fake)
    assert torch.allclose(fast.mask, exact.mask, atol=1e-4)
    assert fast.p_fake.shape == (3,)


def test_transposed_conv_rewrites_are_exact():
    torch.manual_seed(0)
    for stride in (1, 2):
        deconv = nn.ConvTranspose2d(6, 5, 3, stride=stride, padding=1, output_padding=stride - 1)
        seq = rewrite_transposed_convs(nn.Sequential(deconv))
        assert not isinstance(seq[0], nn.ConvTranspose2d)
        assert isinstance(seq[0], SubPixelConv) == (stride == 2)
        x = torch.randn(2, 6, 9, 7)
        assert torch.allclose(seq(x), deconv(x), atol=1e-5)


def test_batchnorm_folding_is_exact():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).eval()
    seq[1].running_mean.uniform_(-1, 1)
    seq[1].running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 8, 8)
    expected = seq(x)
    import copy

    folded = fold_batchnorm(copy.deepcopy(seq))
    assert isinstance(folded[1], nn.Identity)
    assert torch.allclose(folded(x), expected, atol=1e-5)


def test_timm_blocks_fold_their_attribute_pairs_exactly(fast_path_in_fp32):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    m = ClassNSeg(encoder="timm/tf_efficientnet_lite0", latent_channels=32).eval()
    for bn in m.encoder.modules():  # running statistics away from the identity, so an unfolded BN would show
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 256, 256)
    fast, exact = fast_path_in_fp32(m, x), m.predict(x, precision="fp32")  # fp32 whatever this CPU has
    norms = [k for k in m._fast.encoder.modules() if isinstance(k, nn.BatchNorm2d)]
    assert norms == []  # timm's BatchNormAct2d pairs (conv_pw/bn1, conv_dw/bn2, ...) and the projection's
    assert any(isinstance(k, nn.ReLU6) for k in m._fast.encoder.modules())  # BatchNormAct2d's activation is kept
    assert torch.allclose(fast.activations, exact.activations, atol=1e-4)
    assert torch.allclose(fast.mask, exact.mask, atol=1e-3)


def test_half_turned_backbone_pads_nothing_and_computes_the_same():
    pytest.importorskip("timm")
    from mtl.fastpath import HalfTurn, half_turned

    torch.manual_seed(0)
    m = ClassNSeg(encoder="timm/tf_efficientnet_lite0", latent_channels=32).eval()
    m.predict(torch.zeros(1, 3, 256, 256))
    assert isinstance(m._fast.encoder, HalfTurn)  # the fast path took the turned copy
    turned = m._fast.encoder.inner
    assert not any(type(k).__name__ == "Conv2dSame" for k in turned.modules())
    original = m.encoder.eval()
    with torch.no_grad():  # odd sides on the way down (200 -> 100 -> 50 -> 25 -> 13) and a non-square face
        for shape in [(2, 3, 256, 256), (1, 3, 200, 200), (1, 3, 256, 192)]:
            x = torch.randn(shape)
            expected, got = original(x), m._fast.encoder(x.contiguous(memory_format=torch.channels_last))
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, atol=1e-4 * expected.abs().max().item())
    # a stride-2 convolution padded symmetrically (ResNet's, RegNet's) would change its windows when turned
    assert half_turned(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1))) is None
    assert half_turned(nn.Sequential(nn.Conv2d(3, 4, 2))) is None  # even kernel
    assert half_turned(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1))) is not None


def test_attribute_folding_is_undone_where_registration_order_is_not_data_flow():
    import copy

    from mtl.fastpath import checked_backbone

    class Swapped(nn.Module):  # registers bn right after conv_a, but runs it after conv_b
        def __init__(self):
            super().__init__()
            self.conv_a, self.bn, self.conv_b = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.bn(self.conv_b(self.conv_a(x)))

    torch.manual_seed(0)
    module = Swapped().eval()
    module.bn.running_var.uniform_(0.5, 2.0)
    module.bn.running_mean.uniform_(-1, 1)
    probe = torch.randn(1, 4, 8, 8)
    kept = checked_backbone(module, copy.deepcopy(module), probe)
    assert isinstance(getattr(kept, "inner", kept).bn, nn.BatchNorm2d)  # the fold would be wrong here: not kept
    assert torch.allclose(kept(probe), module(probe), atol=1e-5)


def test_predict_rejects_bad_shapes_and_precisions(model):
    with pytest.raises(ValueError, match="Bx3xHxW"):
        model.predict(torch.zeros(3, 256, 256))
    with pytest.raises(ValueError, match="precision"):
        model.predict(torch.zeros(1, 3, 256, 256), precision="fp8")


def test_predict_handles_an_empty_batch(model):
    pred = model.predict(torch.zeros(0, 3, 256, 256))
    assert len(pred) == 0 and pred.mask.shape == (0, 256, 256)


def test_dense_activation_loss_hand_computed():
    from mtl.losses import dense_activation_loss

    latent = torch.zeros(1, 4, 2, 2)
    latent[0, :2, 0, 0] = 1.0  # the fake half fires in the top-left cell only
    masks = torch.zeros(1, 4, 4, dtype=torch.long)
    masks[0, :2, :2] = 1  # exactly the top-left cell manipulated
    assert dense_activation_loss(latent, masks).item() == 0.0
    masks[0, :2, 2:] = 1  # top-right too: that cell should fire fully and does not -> |0 - 1| / 4 cells
    assert dense_activation_loss(latent, masks).item() == pytest.approx(0.25)


def test_margin_loss_hand_computed_and_class_balanced():
    from mtl.losses import margin_loss

    # one real (label 1) with margin a_fake - a_real = -0.5, two identical fakes with margin +0.25; scale 8
    acts = torch.tensor([[0.25, 0.75], [0.5, 0.25], [0.5, 0.25]])
    labels = torch.tensor([1, 0, 0])
    real_term = -math.log(1 - 1 / (1 + math.exp(4.0)))  # -log(1 - sigmoid(-4))
    fake_term = -math.log(1 / (1 + math.exp(-2.0)))  # -log(sigmoid(2))
    assert margin_loss(acts, labels).item() == pytest.approx((real_term + fake_term) / 2, rel=1e-5)
    # the real's weight does not shrink when fakes outnumber it
    more_fakes = margin_loss(torch.cat([acts, acts[1:]]), torch.tensor([1, 0, 0, 0, 0]))
    assert more_fakes.item() == pytest.approx((real_term + fake_term) / 2, rel=1e-5)


def test_margin_loss_focal_modulation_hand_computed():
    from mtl.losses import margin_loss

    acts = torch.tensor([[0.25, 0.75], [0.5, 0.25], [0.5, 0.25]])  # as above: a real at -0.5, two fakes at +0.25
    labels = torch.tensor([1, 0, 0])
    p_real = 1 - 1 / (1 + math.exp(4.0))  # the probability the margin gives each face's true class
    p_fake = 1 / (1 + math.exp(-2.0))
    real_term = -math.log(p_real) * (1 - p_real) ** 2
    fake_term = -math.log(p_fake) * (1 - p_fake) ** 2
    assert margin_loss(acts, labels, focal=2.0).item() == pytest.approx((real_term + fake_term) / 2, rel=1e-5)
    assert margin_loss(acts, labels, focal=0.0).item() == pytest.approx(margin_loss(acts, labels).item())
    # the gradient shifts to the face still ranked wrong: a fake at margin -0.25 against one at +0.5
    acts = torch.tensor([[0.25, 0.75], [0.25, 0.5], [0.75, 0.25]], requires_grad=True)
    margin_loss(acts, labels).backward()
    plain = acts.grad[1:, 0].abs().clone()
    acts.grad = None
    margin_loss(acts, labels, focal=2.0).backward()
    focal = acts.grad[1:, 0].abs()
    assert focal[1] / focal[0] < 0.1 * (plain[1] / plain[0])


def test_multitask_loss_extension_weights():
    x = torch.randn(2, 3, 64, 64)
    m = ClassNSeg()
    labels = torch.tensor([1, 0])
    out = m(x, gate=labels, reconstruct=False)
    assert out.reconstruction is None
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    terms = multitask_loss(out, x, labels, masks, reconstruction_weight=0.0, margin_weight=2.0, dense_weight=0.5)
    assert terms.reconstruction.item() == 0.0 and terms.margin.item() > 0
    expected = terms.activation + terms.segmentation + 2.0 * terms.margin + 0.5 * terms.dense
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_twin_loss_ranks_each_forgery_above_its_own_photos_real_crop():
    # photo 5: a real (margin a_fake - a_real = -0.6) and two fakes (+0.8, -0.4); photo 7: a fake (+0.2) and a real
    # (-0.2); photo -1 (no twins) and photo 9 (a fake alone) add no pair
    acts = torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6], [0.0, 0.9], [0.9, 0.0]],
                        requires_grad=True)
    labels = torch.tensor([REAL, FAKE, FAKE, FAKE, REAL, REAL, FAKE])
    photos = torch.tensor([5, 5, 5, 7, 7, -1, 9])
    gaps = [0.8 - -0.6, -0.4 - -0.6, 0.2 - -0.2]  # each fake's margin minus its twin's
    expected = sum(math.log1p(math.exp(-8.0 * g)) for g in gaps) / 3
    loss = twin_loss(acts, labels, photos)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert acts.grad[5].abs().sum() == 0 and acts.grad[6].abs().sum() == 0  # no twin: no gradient
    assert acts.grad[2, 0] < 0  # descent raises the fake half of a fake barely above its twin the most
    assert acts.grad[2, 0].abs() > acts.grad[1, 0].abs()
    # no pair in the batch: zero, and still part of the graph
    alone = twin_loss(acts, labels, torch.tensor([1, 2, 3, 4, 5, 6, -1]))
    assert alone.item() == 0 and alone.requires_grad
    assert math.copysign(1.0, alone.item()) == 1.0  # +0, not -0 (these margins sum negative)

    x = torch.randn(2, 3, 64, 64)
    m = ClassNSeg()
    out = m(x, gate=torch.tensor([1, 0]), reconstruct=False)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    terms = multitask_loss(out, x, torch.tensor([1, 0]), masks, reconstruction_weight=0.0, twin_weight=3.0,
                           photos=torch.tensor([4, 4]))
    assert terms.twin.item() > 0
    expected_total = terms.activation + terms.segmentation + 3.0 * terms.twin
    assert terms.total.item() == pytest.approx(expected_total.item(), rel=1e-6)
    with pytest.raises(ValueError, match="source photos"):
        multitask_loss(out, x, torch.tensor([1, 0]), masks, twin_weight=1.0)


def test_noise_residuals_are_zero_on_flat_and_linear_images_and_keep_the_rgb():
    from mtl.encoders import NoiseResiduals

    residuals = NoiseResiduals()
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32)  # constant plus a linear ramp
    out = residuals(ramp.contiguous())
    assert out.shape == (2, 12, 32, 32)
    assert torch.equal(out[:, :3], ramp)
    assert out[:, 3:, 2:-2, 2:-2].abs().max() < 1e-4  # high-pass: flat and linear content gives nothing
    impulse = torch.zeros(1, 3, 11, 11)
    impulse[0, 1, 5, 5] = 0.01  # one pixel of the green channel
    out = residuals(impulse)[0, 3:]
    assert out[[0, 1, 2, 6, 7, 8]].abs().max() == 0  # red and blue residuals untouched
    # green, horizontal kernel [1, -2, 1] / 2 scaled by 1/0.068: -0.01 at the centre, +0.005 beside it, scaled
    assert out[5, 5, 5].item() == pytest.approx(-0.01 / 0.068, rel=1e-4)
    assert out[5, 5, 4].item() == pytest.approx(0.005 / 0.068, rel=1e-4)
    big = torch.zeros(1, 3, 11, 11)
    big[0, 0, 5, 5] = 10.0
    assert residuals(big)[:, 3:].abs().max() == 3.0  # clipped as SRM truncates


@pytest.mark.parametrize("encoder", ["classnseg", "timm/regnetx_002"])
def test_a_model_with_noise_residuals_saves_loads_and_its_fast_path_matches(tmp_path, encoder, fast_path_in_fp32):
    if encoder.startswith("timm/"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    m = ClassNSeg(encoder=encoder, latent_channels=32, noise_residuals=True).eval()
    first = next(layer for layer in m.encoder.modules() if isinstance(layer, nn.Conv2d))
    assert first.in_channels == 12
    m.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["noise_residuals"] is True
    loaded = load_model(tmp_path / "ckpt")
    x = torch.randn(2, 3, 256, 256)
    exact = loaded.predict(x, "fp32")
    assert torch.equal(exact.activations, m.predict(x, "fp32").activations)
    fast = fast_path_in_fp32(loaded, x)
    assert torch.allclose(fast.activations, exact.activations, rtol=1e-4, atol=1e-5)
    assert torch.allclose(fast.mask, exact.mask, atol=1e-4)
    assert "noise_residuals" not in ClassNSeg(latent_channels=32).config  # old configs stay as they were


class _SidedEncoder(nn.Module):
    """A latent whose fake half weighs the image's left side and whose real half its right: mirroring matters."""

    def forward(self, x):
        grid = nn.functional.adaptive_avg_pool2d(x.abs().mean(1, keepdim=True), 16)  # B x 1 x 16 x 16
        ramp = torch.linspace(0.0, 2.0, 16)
        fake, real = grid * ramp.flip(0), grid * ramp
        return torch.cat([fake.expand(-1, 16, -1, -1), real.expand(-1, 16, -1, -1)], 1)


def _small_model(**kw):
    torch.manual_seed(0)
    m = ClassNSeg(latent_channels=32, method_head=True, calibration_scale=5.0, calibration_bias=-1.0,
                  **kw).eval()
    m.encoder = _SidedEncoder()
    return m


def test_test_time_flip_averages_a_face_and_its_mirror():
    torch.manual_seed(1)
    x = torch.randn(3, 3, 256, 256)
    x[0, :, :, :100] *= 3  # a face brighter on the left, one on the right, one even
    x[1, :, :, 156:] *= 3
    plain = _small_model()
    flip = _small_model(test_time_flip=True)
    a, b = plain.predict(x, "fp32"), plain.predict(x.flip(-1), "fp32")
    both = flip.predict(x, "fp32")
    assert torch.allclose(both.activations, (a.activations + b.activations) / 2, atol=1e-6)
    assert torch.allclose(both.p_fake, plain.calibrate((a.activations + b.activations) / 2), atol=1e-6)
    assert not torch.allclose(both.p_fake, a.p_fake, atol=1e-4)  # the mirror really changed something
    assert a.is_fake.tolist() == [True, False, False] and b.is_fake.tolist() == [False, True, False]
    # where both views reach the same verdict, the mask is the mean of the mask and the mirror's, flipped back
    same = a.is_fake == b.is_fake
    assert same.any()
    expected = (a.mask + b.mask.flip(-1)) / 2
    assert torch.allclose(both.mask[same], expected[same], atol=1e-5)
    expected_methods = torch.softmax((torch.log(a.method_probs) + torch.log(b.method_probs)) / 2, 1)
    assert torch.allclose(both.method_probs, expected_methods, atol=1e-5)
    # scoring the mirror image gives the same verdict and the mirrored mask
    mirrored = flip.predict(x.flip(-1), "fp32")
    assert torch.allclose(mirrored.p_fake, both.p_fake, atol=1e-6)
    assert torch.allclose(mirrored.mask, both.mask.flip(-1), atol=1e-5)


def test_test_time_flip_is_saved_only_when_on_and_its_fast_path_matches(tmp_path, fast_path_in_fp32):
    assert "test_time_flip" not in ClassNSeg(latent_channels=32).config  # older configs stay as they were
    ClassNSeg(latent_channels=32, test_time_flip=True).save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["test_time_flip"] is True
    assert load_model(tmp_path / "ckpt").test_time_flip
    m = _small_model(test_time_flip=True)
    x = torch.randn(3, 3, 256, 256)
    x[0, :, :, :100] *= 3
    exact = m.predict(x, "fp32")
    fast = fast_path_in_fp32(m, x)
    assert torch.allclose(fast.activations, exact.activations, rtol=1e-4, atol=1e-6)
    assert torch.equal(fast.is_fake, exact.is_fake)
    assert torch.allclose(fast.mask, exact.mask, atol=1e-4)
    assert torch.allclose(fast.method_probs, exact.method_probs, atol=1e-4)
    assert len(m.predict(x[:0], "fp32")) == 0
