import numpy as np
import pytest

from mtl.constants import FAMILIES
from mtl.faces import NoFaceError
from mtl.forge import Forgery, blend, forge


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_forges_inside_its_mask_only(astronaut, landmarks, donor, family):
    f = forge(astronaut, family, np.random.default_rng(3), donor=donor[0], landmarks=landmarks,
              donor_landmarks=donor[1])
    assert isinstance(f, Forgery) and f.family == family
    assert f.image.shape == astronaut.shape and f.image.dtype == np.uint8
    assert f.mask.shape == astronaut.shape[:2] and f.mask.dtype == np.float32
    assert 0.0 <= f.mask.min() and f.mask.max() <= 1.0
    # a manipulation of a face-sized region, not a speck and not the whole picture
    manipulated = f.mask >= 0.5
    assert 0.005 < manipulated.mean() < 0.3
    # the mask sits on the face
    ys, xs = np.nonzero(manipulated)
    assert landmarks[:, 0].min() - 30 < xs.mean() < landmarks[:, 0].max() + 30
    assert landmarks[:, 1].min() - 30 < ys.mean() < landmarks[:, 1].max() + 30
    # outside the mask the photo is untouched, bit for bit
    outside = f.mask == 0
    assert np.array_equal(f.image[outside], astronaut[outside])
    # inside, pixels really changed
    changed = np.abs(f.image.astype(int) - astronaut.astype(int)).max(axis=2) > 2
    assert changed[manipulated].mean() > 0.2


@pytest.mark.parametrize("family", FAMILIES)
def test_a_seed_reproduces_a_forgery(astronaut, landmarks, donor, family):
    a = forge(astronaut, family, np.random.default_rng(11), donor=donor[0], landmarks=landmarks,
              donor_landmarks=donor[1])
    b = forge(astronaut, family, np.random.default_rng(11), donor=donor[0], landmarks=landmarks,
              donor_landmarks=donor[1])
    c = forge(astronaut, family, np.random.default_rng(12), donor=donor[0], landmarks=landmarks,
              donor_landmarks=donor[1])
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not (np.array_equal(a.image, c.image) and np.array_equal(a.mask, c.mask))


def test_masks_vary_between_seeds(astronaut, landmarks):
    areas = {float((forge(astronaut, "selfblend", np.random.default_rng(s), landmarks=landmarks).mask >= 0.5).sum())
             for s in range(6)}
    assert len(areas) >= 4


def test_faceswap_puts_the_donor_in(astronaut, landmarks, donor):
    """Inside the mask the swapped face correlates better with the donor fitted onto the target than with the target."""
    from mtl.forge.faceswap import fit_donor

    f = forge(astronaut, "faceswap", np.random.default_rng(0), donor=donor[0], landmarks=landmarks,
              donor_landmarks=donor[1])
    fitted, _ = fit_donor(astronaut, landmarks, donor[0], donor[1], np.random.default_rng(0), bend=False)
    inside = f.mask > 0.95

    def corr(x, y):
        gx, gy = x[inside].mean(1), y[inside].mean(1)  # grey levels; colour transfer changes colour, not structure
        return np.corrcoef(gx, gy)[0, 1]

    assert corr(f.image, fitted) > corr(f.image, astronaut)


def test_detects_landmarks_itself_and_refuses_a_faceless_photo(astronaut):
    f = forge(astronaut, "reenact", np.random.default_rng(0))
    assert (f.mask >= 0.5).any()
    with pytest.raises(NoFaceError):
        forge(np.full((128, 128, 3), 90, np.uint8), "selfblend", np.random.default_rng(0))
    assert issubclass(NoFaceError, ValueError)


def test_unknown_family_is_a_clear_error(astronaut, landmarks):
    with pytest.raises(ValueError, match="unknown forgery family"):
        forge(astronaut, "cartoon", np.random.default_rng(0), landmarks=landmarks)


def test_mesh_index_lists_match_mediapipe():
    from itertools import chain

    from mediapipe.python.solutions import face_mesh_connections as c

    def idx(conn):
        return set(chain(*conn))

    assert set(blend.FACE_OVAL) == idx(c.FACEMESH_FACE_OVAL)
    assert set(blend.LIPS_OUTER + blend.LIPS_INNER) == idx(c.FACEMESH_LIPS)
    assert set(blend.LEFT_EYE) == idx(c.FACEMESH_LEFT_EYE) and set(blend.RIGHT_EYE) == idx(c.FACEMESH_RIGHT_EYE)
    assert set(blend.LEFT_BROW) == idx(c.FACEMESH_LEFT_EYEBROW)
    assert set(blend.RIGHT_BROW) == idx(c.FACEMESH_RIGHT_EYEBROW)
    assert set(blend.NOSE) == idx(c.FACEMESH_NOSE)
    assert set(blend.JAW) <= set(blend.FACE_OVAL)


def test_alpha_blend_keeps_zero_alpha_pixels_exact():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    alpha = np.zeros((32, 32), np.float32)
    alpha[8:24, 8:24] = 1.0
    alpha[10:12, 10:12] = 0.5
    out = blend.alpha_blend(a, b, alpha)
    assert np.array_equal(out[alpha == 0], b[alpha == 0])
    assert np.array_equal(out[alpha == 1], a[alpha == 1])


def test_tps_warp_moves_a_point_where_asked():
    img = np.zeros((120, 120, 3), np.uint8)
    img[58:63, 38:43] = 255  # a bright dot at (40, 60)
    src = np.array([[40.0, 60.0], [80.0, 60.0], [60.0, 30.0], [60.0, 90.0]])
    dst = src.copy()
    dst[0] = [48.0, 60.0]  # move the dot 8 px right, pin the others
    out = blend.tps_warp(img, src, dst)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert xs.mean() == pytest.approx(48, abs=1.0) and ys.mean() == pytest.approx(60, abs=1.0)


def test_a_selfblend_source_always_gets_a_colour_and_a_frequency_change(astronaut, landmarks, monkeypatch):
    """As SBI's source transforms: both, every time (a colour change alone left a tint no detector here could see)."""
    from mtl.forge.selfblend import make_source

    calls = {"colour": 0, "frequency": 0}
    colour, frequency = blend.jitter_colour, blend.jitter_frequency

    def count(name, fn):
        return lambda *a, **k: calls.__setitem__(name, calls[name] + 1) or fn(*a, **k)

    monkeypatch.setattr(blend, "jitter_colour", count("colour", colour))
    monkeypatch.setattr(blend, "jitter_frequency", count("frequency", frequency))
    for seed in range(12):
        forge(astronaut, "selfblend", np.random.default_rng(seed), landmarks=landmarks)
    assert calls == {"colour": 12, "frequency": 12}
    untouched = make_source(astronaut, landmarks, np.random.default_rng(0), colour=False, frequency=False, shift=False)
    assert np.array_equal(untouched, astronaut)
