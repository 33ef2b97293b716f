"""The shipped default checkpoint (an ensemble of two networks): what it is, that its fast path is its network, and
that it still tells a real face it never saw (scikit-image's astronaut) from clear forgeries of it. A wrong file, a
shifted key or a broken preprocessing step would fail the last test; the reenact and self-blend families are left out
because the default is weak on them (see checkpoints/lite0-forge/README.md)."""

import numpy as np
import pytest
import torch

from mtl import DEFAULT_CHECKPOINT, load_model
from mtl.forge import forge
from mtl.pipeline import analyze_image
from mtl.preprocess import to_model_input


@pytest.fixture(scope="module")
def default():
    return load_model()


def test_the_default_is_a_calibrated_ensemble_of_two_lite0_networks(default):
    assert DEFAULT_CHECKPOINT.name == "lite0-forge"
    cfg = default.config
    assert cfg["name"] == "lite0-forge" and cfg["members"] == ["a", "b"] and cfg["method_head"]
    assert 0.5 < cfg["threshold"] < 1 and cfg["calibration_scale"] > 0.5
    assert "checkpoints/lite0-forge/README.md" in cfg["description"]
    for member in default.members:  # each calibrated on its own: the calibration weighs its evidence in the mean
        assert member.encoder_name == "timm/tf_efficientnet_lite0" and member.method_head is not None
        assert member.calibration_scale > 1


def test_its_fast_path_is_its_network(default, astronaut, fast_path_in_fp32):
    face = analyze_image(astronaut, default).faces[0]
    x = to_model_input(np.stack([face.crop, face.crop[:, ::-1]]))
    exact = default.predict(x, "fp32")
    fast = fast_path_in_fp32(default, x)
    assert torch.allclose(fast.activations, exact.activations, rtol=1e-4, atol=1e-5)
    assert torch.allclose(fast.p_fake, exact.p_fake, atol=1e-4)


def test_it_tells_the_astronaut_from_clear_forgeries_of_her(default, astronaut, landmarks, donor):
    real = analyze_image(astronaut, default)
    assert real.verdict == "real", real.p_fake
    for family in ("deepfake", "faceswap"):
        for seed in range(3):
            fake = forge(astronaut, family, np.random.default_rng(seed), landmarks=landmarks, donor=donor[0],
                         donor_landmarks=donor[1]).image
            r = analyze_image(fake, default)
            assert r.verdict == "fake" and r.p_fake > real.p_fake + 0.5, (family, seed, r.p_fake)
