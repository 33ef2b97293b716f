"""train.evaluate on a tiny dataset made here, and the --pair mode on the authors' weights (needs ../shared)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train import evaluate as E
from train import metrics as M

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
WEIGHTS = SHARED / "weights" / "classnseg-official" / "full"
needs_shared = pytest.mark.skipif(
    not (SHARED / "data" / "samples" / "classnseg" / "fake.jpg").is_file() or not (WEIGHTS / "encoder_46.pt").is_file(),
    reason=f"{SHARED} (the authors' weights and test pair) is absent",
)

ROWS = [  # (name, label, method, video)
    ("r0", "real", "", "vr0"), ("r1", "real", "", "vr0"), ("r2", "real", "", "vr1"),
    ("d0", "fake", "deepfake", "vd0"), ("d1", "fake", "deepfake", "vd0"),
    ("s0", "fake", "selfblend", "vs0"), ("s1", "fake", "Face2Face", "vf0"),
    ("t0", "fake", "deepfake", "vt0"),  # another split: must be ignored
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, random_checkpoint):
    root = tmp_path_factory.mktemp("tiny")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "label", "method", "person", "split", "video"])
        for i, (name, label, method, video) in enumerate(ROWS):
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
            mask = np.zeros((256, 256), np.uint8)
            if label == "fake":
                mask[64:192, 64:192] = 255
            Image.fromarray(mask).save(root / "masks" / f"{name}.png")
            w.writerow([f"images/{name}.png", f"masks/{name}.png", label, method, f"p{i}",
                        "train" if name == "t0" else "test", video])
    return root, random_checkpoint(root / "ckpt")


def test_dataset_items(tiny):
    root, _ = tiny
    ds = E.open_split(root, "test")
    assert len(ds) == 7
    item = ds[3]
    assert item["image"].shape == (3, 256, 256) and item["mask"].dtype == torch.int64
    assert int(item["label"]) == 0 and item["family"] == "deepfake" and item["video"] == "vd0"
    assert int(item["mask"].sum()) == 128 * 128
    assert int(ds[0]["label"]) == 1 and ds[0]["family"] == "real" and int(ds[0]["mask"].sum()) == 0


def test_evaluate_keys_and_family_rows(tiny):
    root, model = tiny
    r = E.evaluate(model, E.open_split(root, "test"), batch_size=4)
    assert r["model"] == "tiny-random" and r["threshold"] == 0.5
    assert set(r["families"]) == {"deepfake", "selfblend", "Face2Face"}
    keys = {"acc", "eer", "eer_threshold", "auc", "tpr", "fpr", "seg_acc", "iou", "n", "n_real", "n_fake"}
    assert keys <= set(r["overall"])
    assert (r["overall"]["n"], r["overall"]["n_real"], r["overall"]["n_fake"]) == (7, 3, 4)
    # per family: that family's fakes against all reals of the split
    assert (r["families"]["deepfake"]["n_real"], r["families"]["deepfake"]["n_fake"]) == (3, 2)
    assert (r["families"]["Face2Face"]["n_real"], r["families"]["Face2Face"]["n_fake"]) == (3, 1)
    for row in [r["overall"], *r["families"].values()]:
        assert 0 <= row["acc"] <= 1 and 0 <= row["auc"] <= 1 and 0 <= row["seg_acc"] <= 1 and 0 <= row["iou"] <= 1
    # video level: 2 real videos, 3 fake ones
    v = r["video"]["overall"]
    assert (v["n"], v["n_real"], v["n_fake"]) == (5, 2, 3)
    assert set(r["video"]["families"]) == {"deepfake", "selfblend", "Face2Face"}
    json.dumps(r)  # JSON-serialisable as it is
    table = E.format_table([r])
    assert "all (video)" in table and "Face2Face" in table and "Seg. acc" in table


def test_summary_matches_metrics_directly():
    # hand-made samples: summarize must agree with train.metrics on the same subsets
    s = {
        "p_fake": np.array([0.1, 0.6, 0.7, 0.4, 0.9]),
        "label": np.array([1, 1, 0, 0, 0]),
        "family": np.array(["real", "real", "a", "a", "b"]),
        "pixel_acc": np.array([1.0, 0.5, 0.8, 0.6, 0.9]),
        "iou": np.array([1.0, 0.0, 0.5, 0.1, 0.7]),
        "video": None,
    }
    r = E.summarize(s, 0.5)
    assert r["overall"]["auc"] == pytest.approx(M.roc_auc([0, 0, 1, 1, 1], s["p_fake"]))
    assert r["overall"]["acc"] == pytest.approx(3 / 5)  # 0.1 real ok, 0.6 real wrong, 0.7 ok, 0.4 wrong, 0.9 ok
    a = r["families"]["a"]
    assert a["auc"] == pytest.approx(0.75)  # fakes 0.7, 0.4 vs reals 0.1, 0.6: only (0.4, 0.6) misordered
    assert a["iou"] == pytest.approx(0.3) and a["seg_acc"] == pytest.approx((1 + 0.5 + 0.8 + 0.6) / 4)
    assert r["families"]["b"]["auc"] == 1.0 and r["families"]["b"]["tpr"] == 1.0
    assert "video" not in r


def test_cli_dataset_json(tiny, tmp_path, capsys):
    root, _ = tiny
    out = tmp_path / "r.json"
    assert E.main(["--data", str(root), "--split", "test", "--model", str(root / "ckpt"), "--json", str(out),
                   "--limit", "5"]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 5 and res["results"][0]["model"] == "ckpt"
    assert "Acc" in capsys.readouterr().out


def test_cli_images_false_positive_rate(tiny, tmp_path):
    root, _ = tiny
    out = tmp_path / "fp.json"
    E.main(["--images", str(root / "images" / "r0.png"), str(root / "images" / "r1.png"),
            "--model", str(root / "ckpt"), "--json", str(out)])
    r = json.loads(out.read_text())["results"][0]
    assert r["faces"] == 2 and r["images"] == 2 and 0 <= r["fpr_faces"] <= 1


@needs_shared
def test_pair_authors_full_matches_golden():
    from mtl.convert import convert_authors_checkpoint

    golden = np.load(SHARED / "data" / "samples" / "classnseg" / "golden.npz")
    model = convert_authors_checkpoint(WEIGHTS / "encoder_46.pt", WEIGHTS / "decoder_46.pt", name="authors-full")
    rows = {r["truth"]: r for r in E.evaluate_pair(model)}
    for truth in ("real", "fake"):
        crop, mask = E.load_pair_image(SHARED / "data" / "samples" / "classnseg" / f"{truth}.jpg")
        from mtl.preprocess import to_model_input

        np.testing.assert_allclose(to_model_input(crop)[0].numpy(), golden[f"full_{truth}_input"], atol=1e-6)
        np.testing.assert_allclose([rows[truth]["a_fake"], rows[truth]["a_real"]], golden[f"full_{truth}_act"],
                                   rtol=1e-4)
        assert rows[truth]["verdict"] == truth
        expected_acc = ((golden[f"full_{truth}_seg1"] > 0.5) == (mask > 0)).mean()
        assert rows[truth]["seg_acc"] == pytest.approx(expected_acc, abs=1e-3)
    assert rows["fake"]["iou"] > 0.5


# --- calibration --------------------------------------------------------------------------------------------------
def test_calibration_recovers_known_logistic_map():
    from train.calibrate import fit_calibration

    rng = np.random.default_rng(1)
    n = 20000
    margin = rng.normal(0.2, 0.5, n)
    is_fake = rng.random(n) < 1 / (1 + np.exp(-(4.0 * margin - 1.0)))
    a_real = rng.random(n) + 0.5
    acts = np.stack([a_real + margin, a_real], axis=1)
    scale, bias, threshold, report = fit_calibration(acts, np.where(is_fake, 0, 1), target_fpr=0.05)
    assert scale == pytest.approx(4.0, abs=0.25) and bias == pytest.approx(-1.0, abs=0.1)
    assert report["fit"]["converged"]
    # the threshold: at most 5% of these reals flagged, and not far below
    assert 0.04 <= report["after"]["fpr"] <= 0.05
    # the report carries the count behind the FPR and the interval those counts allow
    n_real = int((~is_fake).sum())
    assert report["after"]["reals_flagged"] == round(report["after"]["fpr"] * n_real)
    lo, hi = report["after"]["fpr_interval"]
    assert (lo, hi) == pytest.approx(M.binomial_interval(report["after"]["reals_flagged"], n_real))
    assert lo < report["after"]["fpr"] < hi
    # the model applies it in float32: the stored threshold must give the same FPR there
    from mtl.model import ClassNSeg

    m = ClassNSeg()
    m.set_calibration(scale, bias, threshold)
    p_real = m.calibrate(torch.tensor(acts[~is_fake], dtype=torch.float32))
    assert float((p_real > m.threshold).float().mean()) == pytest.approx(report["after"]["fpr"])
    assert report["after"]["brier"] < report["before"]["brier"] and report["after"]["ece"] < 0.02


def test_calibration_separable_stays_finite():
    from train.calibrate import fit_calibration

    acts = np.array([[0.1, 1.0], [0.2, 0.9], [1.0, 0.1], [0.9, 0.2]])
    scale, bias, threshold, report = fit_calibration(acts, [1, 1, 0, 0], target_fpr=0.0)
    assert np.isfinite(scale) and scale > 0 and np.isfinite(bias)
    assert report["after"]["fpr"] == 0.0 and report["after"]["tpr"] == 1.0


def test_calibrate_cli_writes_config(tiny, tmp_path):
    from mtl import load_model
    from train import calibrate

    root, _ = tiny
    out = tmp_path / "calibrated"
    # the tiny manifest has no val split: calibrate on its test split
    assert calibrate.main(["--data", str(root), "--split", "test", "--model", str(root / "ckpt"), "--out", str(out),
                           "--target-fpr", "0.34"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    rep = json.loads((out / "calibration.json").read_text())
    assert cfg["calibration_scale"] == rep["scale"] and cfg["threshold"] == rep["threshold"]
    m = load_model(out)
    assert m.threshold == rep["threshold"]
    r = E.evaluate(m, E.open_split(root, "test"))
    assert r["overall"]["fpr"] == pytest.approx(rep["after"]["fpr"])  # the reloaded model reproduces the fit's FPR
    assert r["overall"]["fpr"] <= 0.34


def test_false_positive_rate_on_frames_of_real_videos(tmp_path):
    from mtl.model import ClassNSeg
    from tests.media import write_clip
    from train.evaluate import evaluate_real_videos

    torch.manual_seed(0)
    model = ClassNSeg().eval()
    clip = write_clip(tmp_path / "real.mp4", n=20, audio=False)
    model.threshold = 1.0  # nothing can exceed it: FPR 0
    r = evaluate_real_videos(model, [clip], every=5)
    assert r["videos"] == 1 and r["frames_with_face"] == 4 and r["fpr_frames"] == 0.0
    assert r["fpr_frames_interval"] == [0.0, 0.0]
    model.threshold = -1.0  # everything exceeds it: FPR 1
    r = evaluate_real_videos(model, [tmp_path], every=5)
    assert r["fpr_frames"] == 1.0 and r["fpr_videos"] == 1.0 and r["fpr_frames_interval"] == [1.0, 1.0]
    assert r["per_video"][0]["video"] == "real.mp4" and len(r["per_video"][0]["frame_p_fake"]) == 4


def test_precision_is_refused_for_videos_which_run_the_apps_pipeline(tmp_path, capsys):
    import train.evaluate as E

    with pytest.raises(SystemExit):
        E.main(["--videos", str(tmp_path), "--precision", "fp32"])
    assert "--precision does not apply to --videos" in capsys.readouterr().err


def test_calibrate_cli_turns_test_time_flip_on_and_fits_on_mirrored_views(tiny, tmp_path):
    from mtl import load_model
    from train import calibrate

    root, _ = tiny
    out = tmp_path / "flip"
    assert calibrate.main(["--data", str(root), "--split", "test", "--model", str(root / "ckpt"), "--out", str(out),
                           "--target-fpr", "0.34", "--test-time-flip"]) == 0
    rep = json.loads((out / "calibration.json").read_text())
    m = load_model(out)
    assert m.test_time_flip and rep["test_time_flip"] is True
    r = E.evaluate(m, E.open_split(root, "test"))
    assert r["overall"]["fpr"] == pytest.approx(rep["after"]["fpr"])  # fitted on the same mirrored scores
    assert not load_model(root / "ckpt").test_time_flip  # --out left the original alone
    assert calibrate.main(["--data", str(root), "--split", "test", "--model", str(out), "--no-test-time-flip"]) == 0
    assert not load_model(out).test_time_flip
