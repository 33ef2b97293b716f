"""mtl.pipeline, mtl.methods and mtl.render on generated inputs: the astronaut photo, forged versions, odd files."""

from __future__ import annotations

import copy
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mtl.constants import FAMILIES
from mtl.methods import SOURCE_HEAD, SOURCE_SHAPE, MethodGuess, combine, guess_method, probs_from_shape, shape_features
from mtl.pipeline import MAX_PIXELS, InputError, analyze_image, get_model, load_image, verdict_text
from mtl import render


@pytest.fixture(scope="module")
def model():
    return get_model()


@pytest.fixture(scope="module")
def always_fake(model):
    """The same network with its threshold below every probability: every face is judged manipulated, so the
    decoder runs on the fake half and the method guess is exercised end to end."""
    m = copy.deepcopy(model)
    m.threshold = -1.0
    m._fast = None
    return m


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height but holds almost no data (enough for PIL to read the size)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# --- reading images ------------------------------------------------------------------------------------------------
def test_load_image_modes(tmp_path, astronaut):
    grey = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    out = load_image(grey)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and np.array_equal(out[..., 1], grey)

    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half transparent -> white
    out = load_image(rgba)
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[9, 9]) == (255, 255, 255)

    sixteen = np.full((8, 8), 257 * 100, np.uint16)
    assert load_image(sixteen)[0, 0, 0] == 100
    assert load_image(np.full((4, 4, 3), 0.5, np.float32))[0, 0, 0] == 128

    # files: 16-bit greyscale PNG, CMYK JPEG, RGBA PNG, palette GIF
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    assert load_image(tmp_path / "g16.png")[0, 0, 0] == 100
    Image.fromarray(astronaut).convert("CMYK").save(tmp_path / "cmyk.jpg")
    cmyk = load_image(str(tmp_path / "cmyk.jpg"))
    assert cmyk.shape == astronaut.shape and np.abs(cmyk.astype(int) - astronaut).mean() < 12
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert tuple(load_image(tmp_path / "a.png")[9, 9]) == (255, 255, 255)
    Image.fromarray(astronaut).convert("P").save(tmp_path / "p.gif")
    assert load_image(tmp_path / "p.gif").shape == astronaut.shape
    pil = Image.fromarray(astronaut)
    assert np.array_equal(load_image(pil), astronaut)
    assert np.array_equal(load_image((tmp_path / "a.png").read_bytes()), load_image(tmp_path / "a.png"))


@pytest.mark.parametrize("content, words", [
    (b"this is a text file, not a photo\n", "not an image"),
    (b"", "empty"),
])
def test_unreadable_files_are_input_errors(tmp_path, content, words):
    p = tmp_path / "photo.jpg"
    p.write_bytes(content)
    with pytest.raises(InputError, match=words):
        load_image(p)


def test_truncated_jpeg(tmp_path, astronaut):
    p = tmp_path / "full.jpg"
    Image.fromarray(astronaut).save(p, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_image(cut)


def test_load_image_closes_every_file_it_opens(tmp_path, astronaut):
    import gc
    import warnings

    Image.fromarray(astronaut).convert("P").save(tmp_path / "p.gif")  # multi-frame formats keep their file open
    Image.fromarray(astronaut).save(tmp_path / "full.jpg", quality=90)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:2000])
    huge = _png_header_only(tmp_path / "huge.png", 20000, 20000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(tmp_path / "p.gif").shape == astronaut.shape
        for bad in (tmp_path / "cut.jpg", huge):
            with pytest.raises(InputError):
                load_image(bad)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("w, h", [(20000, 20000), (10000, 6000)])
def test_huge_images_refused_from_the_header(tmp_path, w, h):
    p = _png_header_only(tmp_path / "huge.png", w, h)
    assert w * h > MAX_PIXELS
    with pytest.raises(InputError, match="limit is 50 MP"):
        load_image(p)


def test_missing_and_wrong_types(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(InputError):
        load_image(12345)
    with pytest.raises(InputError):
        load_image(np.zeros((4, 4, 7), np.uint8))


# --- analysing photos ----------------------------------------------------------------------------------------------
def test_astronaut_one_face(model, astronaut):
    r = analyze_image(astronaut, model)
    assert len(r.faces) == 1
    f = r.faces[0]
    x0, y0, x1, y1 = f.box
    # the face sits in the upper middle of the 512x512 photo
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200 and 60 < x1 - x0 < 200
    assert 0.0 <= f.p_fake <= 1.0
    assert f.is_fake == (f.p_fake > model.threshold)
    assert r.verdict == ("fake" if f.is_fake else "real") and r.p_fake == f.p_fake
    assert r.mask.shape == astronaut.shape[:2] and r.mask.dtype == np.float32
    assert f.crop.shape == (256, 256, 3) and f.crop_mask.shape == (256, 256)
    if not f.is_fake:
        assert f.method is None and r.method is None and not r.mask.any()  # no region for a face judged real
        assert np.array_equal(f.crop_overlay(), f.crop)
    assert r.summary == verdict_text(f.p_fake, f.is_fake)
    ann = r.annotated()
    assert ann.shape == astronaut.shape and not np.array_equal(ann, astronaut)  # the box at least


def test_same_result_from_path_pil_and_array(model, astronaut, tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(astronaut).save(p)
    a = analyze_image(astronaut, model)
    b = analyze_image(p, model)
    c = analyze_image(Image.fromarray(astronaut).convert("RGBA"), model)
    assert a.p_fake == pytest.approx(b.p_fake, abs=1e-5) == pytest.approx(c.p_fake, abs=1e-5)


def test_tiny_and_faceless_images(model):
    one = analyze_image(np.zeros((1, 1, 3), np.uint8), model)
    assert one.verdict == "no_face" and one.p_fake is None and one.method is None and "too small" in one.notes[0]
    assert one.mask.shape == (1, 1)
    sky = analyze_image(np.full((300, 400, 3), (120, 170, 230), np.uint8), model)
    assert sky.verdict == "no_face" and sky.faces == [] and not sky.mask.any()
    assert sky.to_dict()["faces"] == []


def test_grey_astronaut_still_has_a_face(model, astronaut):
    grey = np.asarray(Image.fromarray(astronaut).convert("L"))
    assert len(analyze_image(grey, model).faces) == 1


def test_face_judged_fake_gets_mask_and_method(always_fake, astronaut):
    from mtl.forge import forge

    forged = forge(astronaut, "deepfake", np.random.default_rng(0)).image
    r = analyze_image(forged, always_fake)
    f = r.faces[0]
    assert f.is_fake and r.verdict == "fake"
    assert np.allclose(r.mask.max(), f.crop_mask.max(), atol=0.05)
    if f.method is not None:  # None only when the decoded map is empty and there is no head
        assert set(f.method.probs) == set(FAMILIES)
        assert sum(f.method.probs.values()) == pytest.approx(1.0)
        assert f.method.source in (SOURCE_HEAD, SOURCE_SHAPE)
        assert (f.method.source == SOURCE_HEAD) == bool(always_fake.config.get("method_head"))
    else:
        assert not always_fake.config.get("method_head") and f.crop_mask.max() <= 0.5


def test_several_faces(model, astronaut):
    two = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    r = analyze_image(two, model)
    assert len(r.faces) == 2
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in r.faces)
    assert centres[0] < 512 < centres[1]
    assert r.p_fake == max(f.p_fake for f in r.faces)


# --- method guess --------------------------------------------------------------------------------------------------
def _canonical_mask(rows: tuple[float, float], cols=(0.2, 0.8), size=256):
    """A rectangle given in fractions of the face box of the paper's 1.3x crop (crop=None geometry)."""
    m = np.zeros((size, size), np.float32)
    lo = size * (1 - 1 / 1.3) / 2
    span = size / 1.3
    r0, r1 = (int(lo + v * span) for v in rows)
    c0, c1 = (int(lo + v * span) for v in cols)
    m[r0:r1, c0:c1] = 0.9
    return m


@pytest.mark.parametrize("rows, cols, family", [
    ((0.25, 0.95), (0.15, 0.85), "deepfake"),  # brows to chin
    ((-0.12, 1.0), (-0.05, 1.05), "faceswap"),  # hull: forehead and wider than the face
    ((0.62, 0.92), (0.25, 0.75), "reenact"),  # mouth and chin
    ((0.25, 0.42), (0.15, 0.85), "selfblend"),  # eye band only
])
def test_shape_heuristic(rows, cols, family):
    g = guess_method(True, None, _canonical_mask(rows, cols))
    assert g.source == SOURCE_SHAPE and g.top == family, g.probs
    assert sum(g.probs.values()) == pytest.approx(1.0)


def test_method_rules():
    head = np.array([0.1, 0.6, 0.2, 0.1])
    g = guess_method(True, head, _canonical_mask((0.25, 0.95)))
    assert g.source == SOURCE_HEAD and g.top == "reenact" and g.probs["reenact"] == pytest.approx(0.6)
    assert guess_method(False, head, _canonical_mask((0.25, 0.95))) is None  # never for a face judged real
    assert guess_method(True, None, np.zeros((256, 256), np.float32)) is None  # nothing segmented
    assert shape_features(np.zeros((256, 256))) is None
    both = combine([g, None, MethodGuess(dict(zip(FAMILIES, [1.0, 0, 0, 0])), SOURCE_SHAPE)], [1.0, 5.0, 1.0])
    assert both.probs["deepfake"] == pytest.approx(0.55) and both.source == SOURCE_SHAPE
    assert combine([None, None]) is None
    assert "reenact" in g.describe().lower() or "face2face" in g.describe().lower()


def test_probs_from_shape_is_a_distribution():
    from mtl.methods import ShapeFeatures

    p = probs_from_shape(ShapeFeatures(area=0.5, eyes=0.5, mouth=0.5, top=-0.5, width=0.8))
    assert set(p) == set(FAMILIES) and sum(p.values()) == pytest.approx(1.0) and min(p.values()) > 0


# --- rendering -----------------------------------------------------------------------------------------------------
def test_overlay_only_where_the_mask_is():
    img = np.full((100, 120, 3), 128, np.uint8)
    mask = np.zeros((100, 120), np.float32)
    mask[20:60, 30:70] = 0.95
    out = render.overlay_mask(img, mask, contour=False)
    changed = np.any(out != img, axis=2)
    assert changed[20:60, 30:70].all() and not changed[:20].any() and not changed[:, 80:].any()
    assert np.array_equal(render.overlay_mask(img, np.zeros_like(mask)), img)
    with pytest.raises(ValueError):
        render.overlay_mask(img, np.zeros((10, 10), np.float32))


def test_boxes_use_distinct_colours_and_labels():
    img = np.zeros((200, 400, 3), np.uint8)
    out = render.draw_boxes(img, [render.BoxLabel((20, 60, 150, 190), "FAKE 0.93", True),
                                  render.BoxLabel((220, 60, 350, 190), "real 0.10", False)])
    left, right = out[:, :200].reshape(-1, 3), out[:, 200:].reshape(-1, 3)
    assert (left == render.VERMILLION).all(axis=1).any() and not (left == render.BLUE).all(axis=1).any()
    assert (right == render.BLUE).all(axis=1).any() and not (right == render.VERMILLION).all(axis=1).any()
    assert ((out > 230).all(axis=2)[40:60, 20:150]).sum() > 20  # white label text above the left box
    assert render.mask_to_uint8(np.array([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]


@pytest.mark.parametrize("square", [(120.0, 90.0, 150.0), (15.5, 180.2, 130.0), (290.0, 10.0, 90.0)])
def test_frame_mask_matches_a_full_frame_paste(square):
    """The pipeline pastes each mask into its square's box only; that must equal mtl.faces' full-frame paste,
    also for squares that leave the frame."""
    from mtl.faces import FaceBox, FaceCrop, paste_mask
    from mtl.pipeline import FaceResult, _frame_mask

    rng = np.random.default_rng(1)
    crop_mask = rng.random((256, 256)).astype(np.float32)
    cx, cy, side = square
    box = (cx - side / 2.6, cy - side / 2.6, cx + side / 2.6, cy + side / 2.6)
    face = FaceResult(box, 0.9, 0.9, True, (0.2, 0.1), None, np.zeros((256, 256, 3), np.uint8), crop_mask, square)
    mask, region = _frame_mask([face], (200, 300))
    full = paste_mask(crop_mask, FaceCrop(face.crop, FaceBox(*box), square), (200, 300))
    # equal up to OpenCV's fixed-point sub-pixel rounding (1/32 px), which shows on this pixel-noise mask
    assert np.abs(mask - full).max() < 0.05 and np.abs(mask - full).mean() < 1e-3
    assert np.array_equal(mask > 0, full > 0)
    x0, y0, x1, y1 = region
    outside = mask.copy()
    outside[y0:y1, x0:x1] = 0
    assert not outside.any()
    real = FaceResult(box, 0.9, 0.1, False, (0.1, 0.2), None, face.crop, crop_mask, square)
    assert _frame_mask([real], (200, 300))[1] is None  # no region for a face judged real
