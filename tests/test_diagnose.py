"""train.diagnose: degradations and forgery visibility on a tiny dataset made here."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtl import ClassNSeg
from train import diagnose as D
from train import evaluate as E
from train import metrics as M
from train.data import ManifestDataset, augment_pair, h264_round_trip


def test_h264_round_trip_is_lossy_but_close(astronaut):
    crop = np.ascontiguousarray(astronaut[:256, 128:384])
    out = h264_round_trip(crop, crf=30)
    assert out.shape == crop.shape and out.dtype == np.uint8
    mse = np.mean((out.astype(float) - crop.astype(float)) ** 2)
    assert mse > 0.5  # the codec changed it
    assert 10 * np.log10(255**2 / mse) > 25  # but it is still the same picture (PSNR in dB)
    assert np.array_equal(h264_round_trip(crop, crf=30), out)  # deterministic


def test_h264_augmentation_replaces_the_jpeg_step_when_asked(monkeypatch):
    import train.data

    calls = []
    monkeypatch.setattr(train.data, "h264_round_trip", lambda rgb, crf: calls.append(crf) or rgb)
    rgb, mask = np.full((64, 64, 3), 128, np.uint8), np.zeros((64, 64), np.uint8)
    for seed in range(20):
        augment_pair(rgb, mask, np.random.default_rng(seed))
    assert calls == []  # off by default
    for seed in range(20):
        augment_pair(rgb, mask, np.random.default_rng(seed), h264=1.0)
    assert len(calls) == 20 and all(18 <= c <= 38 for c in calls)


def test_training_data_passes_the_h264_share_on(built, tmp_path):
    from train.train import build_datasets, parse_args

    root, _ = built
    for folder in ("images", "masks"):
        (tmp_path / folder).symlink_to(root / folder)
    lines = (root / "manifest.csv").read_text().splitlines()
    rows = [line.replace(",test", ",train" if i % 2 else ",val") for i, line in enumerate(lines[1:])]
    (tmp_path / "manifest.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    args = parse_args(["--data", str(tmp_path), "--out", "unused", "--h264", "0.3"])
    train_set, _ = build_datasets(args)
    assert isinstance(train_set, ManifestDataset) and train_set.h264 == 0.3


def test_real_twins_follow_the_builders_names():
    rows = [
        {"image": "images/000001_0_real.jpg", "label": "real"},
        {"image": "images/000001_1_deepfake.jpg", "label": "fake"},
        {"image": "images/000001_2_selfblend.jpg", "label": "fake"},
        {"image": "images/000002_1_faceswap.jpg", "label": "fake"},  # its real crop is not listed
        {"image": "other/000001_1_deepfake.jpg", "label": "fake"},  # another folder: another photo
    ]
    assert D.real_twins(rows) == {"images/000001_1_deepfake.jpg": "images/000001_0_real.jpg",
                                  "images/000001_2_selfblend.jpg": "images/000001_0_real.jpg"}


# photo id, family, how far the forgery moves the pixels inside its mask
FORGERIES = [(0, "deepfake", 1), (1, "deepfake", 3), (2, "selfblend", 6), (3, "selfblend", 12), (4, "faceswap", 40)]


@pytest.fixture(scope="module")
def built(tmp_path_factory, random_checkpoint):
    """A split written the way train.build_dataset names things: each photo's real crop and one forgery of it."""
    root = tmp_path_factory.mktemp("built")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    mask = np.zeros((256, 256), np.uint8)
    mask[64:192, 64:192] = 255
    Image.fromarray(mask).save(root / "masks" / "m.png")
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "label", "method", "person", "split"])
        for photo, family, delta in FORGERIES:
            real = rng.integers(40, 200, (256, 256, 3), dtype=np.uint8)
            fake = real.copy()
            fake[64:192, 64:192] += np.uint8(delta)
            Image.fromarray(real).save(root / "images" / f"{photo:06d}_0_real.png")
            Image.fromarray(fake).save(root / "images" / f"{photo:06d}_1_{family}.png")
            w.writerow([f"images/{photo:06d}_0_real.png", "", "real", "", f"p{photo}", "test"])
            w.writerow([f"images/{photo:06d}_1_{family}.png", "masks/m.png", "fake", family, f"p{photo}", "test"])
    return root, random_checkpoint(root / "ckpt")


def test_visibility_is_the_change_inside_the_mask(built):
    root, _ = built
    data = E.open_split(root, "test")
    vis = D.visibility(root, data.rows)
    got = {r["image"]: v for r, v in zip(data.rows, vis)}
    for photo, family, delta in FORGERIES:
        assert got[f"images/{photo:06d}_1_{family}.png"] == pytest.approx(delta)
        assert np.isnan(got[f"images/{photo:06d}_0_real.png"])


def test_visibility_pairs_a_subset_against_the_whole_manifest(built):
    root, _ = built
    fakes_only = [r for r in E.open_split(root, "test").rows if r["label"] == "fake"]
    assert np.isfinite(D.visibility(root, fakes_only)).all()


def test_by_visibility_bins_each_forgery_once(built):
    root, model = built
    result = D.by_visibility(model, E.open_split(root, "test"), precision="fp32")
    assert result["paired"] == result["fakes"] == len(FORGERIES)
    counts = {fam: [b["n"] for b in d["bins"]] for fam, d in result["families"].items()}
    assert counts == {"deepfake": [1, 1, 0, 0, 0], "selfblend": [0, 0, 1, 1, 0], "faceswap": [0, 0, 0, 0, 1]}
    # every mask covers 128x128 of 256x256: a quarter of the crop, the 20-30% bin
    areas = {fam: [b["n"] for b in d["area_bins"]] for fam, d in result["families"].items()}
    assert areas == {"deepfake": [0, 0, 0, 2, 0, 0], "selfblend": [0, 0, 0, 2, 0, 0], "faceswap": [0, 0, 0, 1, 0, 0]}
    assert result["families"]["selfblend"]["median_area"] == 0.25
    text = D.format_visibility(result)
    assert "faceswap" in text and "20-30%" in text


def test_no_degradation_scores_as_evaluate_does(built):
    root, model = built
    data = E.open_split(root, "test")
    (row,) = D.degradations(model, data, ["none"], precision="fp32")
    s = E.collect(model, data, precision="fp32")
    fake = s["label"] == 0
    assert row["auc"]["all"] == pytest.approx(M.roc_auc(fake, s["p_fake"]))
    assert row["real_flagged"] == pytest.approx(float((s["p_fake"][~fake] > model.threshold).mean()))
    assert np.isnan(row["auc"]["reenact"])  # no reenact forgeries here


@pytest.mark.parametrize("name", ["jpeg 40-60", "motion 9 px, mouth", "motion 5 px, whole"])
def test_a_degradation_changes_the_crops_the_same_way_every_time(built, name):
    root, _ = built
    data = E.open_split(root, "test")
    plain = data[1]["image"]
    once = D.DegradedFrames(data, D.DEGRADATIONS[name])[1]["image"]
    again = D.DegradedFrames(data, D.DEGRADATIONS[name])[1]["image"]
    assert torch.equal(once, again)
    assert not torch.equal(once, plain)


def test_cli_prints_the_table_and_writes_json(built, tmp_path, capsys):
    root, _ = built
    out = tmp_path / "d.json"
    D.main(["degradations", "--data", str(root), "--split", "test", "--model", str(root / "ckpt"),
            "--only", "none", "--only", "blur 0.3-1.2", "--precision", "fp32", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "blur 0.3-1.2" in printed and "reals flagged" in printed
    import json

    assert [r["degradation"] for r in json.loads(out.read_text())] == ["none", "blur 0.3-1.2"]


def test_matched_false_alarms_by_hand():
    fakes = np.arange(1, 11) / 10  # 0.1 .. 1.0
    frames = [0.05, 0.55, 0.75, 0.95]
    rows = D.matched_false_alarms(fakes, frames, tprs=(0.5, 0.2, 0.0))
    # half the fakes caught: the threshold sits just below 0.6, where 0.75 and 0.95 of the frames are flagged
    assert rows[0]["tpr_achieved"] == 0.5 and rows[0]["frames_flagged"] == 0.5 and 0.5 < rows[0]["threshold"] < 0.6
    assert rows[1]["tpr_achieved"] == pytest.approx(0.2) and rows[1]["frames_flagged"] == 0.25
    assert rows[2]["tpr_achieved"] == 0.0 and rows[2]["frames_flagged"] == 0.0


def test_tradeoff_cli_scores_the_split_and_the_clip(built, tmp_path, capsys):
    import json

    from tests.media import write_clip

    root, _ = built
    clip = write_clip(tmp_path / "real.mp4", n=20, audio=False)
    out = tmp_path / "t.json"
    D.main(["tradeoff", "--data", str(root), "--split", "test", "--model", str(root / "ckpt"), "--videos", str(clip),
            "--every", "5", "--tpr", "0.5", "--tpr", "1.0", "--json", str(out)])
    assert "frames flagged" in capsys.readouterr().out
    t = json.loads(out.read_text())
    assert t["frames"] == 4 and [r["tpr"] for r in t["rows"]] == [0.5, 1.0]
    assert t["rows"][1]["tpr_achieved"] == 1.0  # every fake caught: the threshold is below them all


def test_selfblend_ingredients_scores_each_variant_against_the_same_reals(tmp_path, astronaut, random_checkpoint):
    import json

    from mtl.faces import crop_face, detect_faces

    face = crop_face(astronaut, detect_faces(astronaut)[0]).image
    (tmp_path / "images").mkdir()
    crops = {"000000_0_real.png": face, "000001_0_real.png": np.ascontiguousarray(face[:, ::-1]),
             "000002_0_real.png": np.full((256, 256, 3), 120, np.uint8)}  # no face: skipped
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "label", "method", "person", "split"])
        for i, (name, crop) in enumerate(crops.items()):
            Image.fromarray(crop).save(tmp_path / "images" / name)
            w.writerow([f"images/{name}", "", "real", "", f"p{i}", "test"])
    random_checkpoint(tmp_path / "ckpt")
    D.main(["selfblend", "--data", str(tmp_path), "--split", "test", "--model", str(tmp_path / "ckpt"),
            "--json", str(tmp_path / "out.json")])
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["reals"] == 2 and result["skipped_no_landmarks"] == 1
    assert list(result["variants"]) == list(D.SELFBLEND_VARIANTS)
    for name, v in result["variants"].items():
        assert 0.0 <= v["auc"] <= 1.0, name
        assert v["median_change"] > 0.5, name  # every variant really changed the face inside its mask


class _CentreModel:
    """A stand-in detector whose evidence is how much brighter the face's centre is than a fixed corner, times
    ``scale``, plus ``tilt`` times the corner's brightness: two such models disagree on which crops are fakest."""

    threshold = 0.5

    def __init__(self, scale: float, tilt: float):
        self.scale, self.tilt = scale, tilt

    def predict(self, x, precision="fp32"):
        from mtl.model import Prediction

        corner = x[:, :, :32, :32].mean((1, 2, 3))
        ev = self.scale * (x[:, :, 64:192, 64:192].mean((1, 2, 3)) - corner) + self.tilt * corner
        act = torch.stack([ev, torch.zeros_like(ev)], 1)
        p = torch.sigmoid(ev)
        return Prediction(p, p > 0.5, act, torch.zeros(len(x), 256, 256), None)


def test_ensemble_averages_standardized_evidence(built):
    root, _ = built
    a, b = _CentreModel(1.0, 10.0), _CentreModel(1.0, -10.0)  # each misled by the corner, in opposite directions
    data = E.open_split(root, "test")
    reference = E.open_split(root, "test", limit=6, seed=3)
    result = D.ensemble([a, b], ["a", "b"], data, reference)
    assert [r["model"] for r in result["rows"]] == ["a", "b", "average of the 2"]
    assert result["crops"] == 10 and result["reference_crops"] == 6

    fake = np.array([row["label"] == "fake" for row in data.rows])
    z = []
    for m in (a, b):
        ev = D.evidence(E.collect(m, data))
        ref = D.evidence(E.collect(m, reference))
        z.append((ev - ref.mean()) / ref.std())
        assert result["rows"][len(z) - 1]["auc"]["all"] == pytest.approx(M.roc_auc(fake, ev))
    average = M.roc_auc(fake, (z[0] + z[1]) / 2)
    # their mistakes cancel: the average ranks the crops better than either (0.96 against 0.88 and 0.88)
    assert average > max(result["rows"][0]["auc"]["all"], result["rows"][1]["auc"]["all"])
    assert result["rows"][2]["auc"]["all"] == pytest.approx(average)
    # a model averaged with itself is that model
    twice = D.ensemble([b, b], ["b", "b"], data, reference)
    assert twice["rows"][2]["auc"] == pytest.approx(twice["rows"][0]["auc"], nan_ok=True)


def test_ensemble_cli_takes_several_models_and_the_others_one(built, tmp_path, capsys):
    root, _ = built
    ckpt = str(root / "ckpt")
    D.main(["ensemble", "--data", str(root), "--split", "test", "--reference-split", "test", "--model", ckpt,
            "--model", ckpt, "--json", str(tmp_path / "e.json")])
    printed = capsys.readouterr().out
    assert "average of the 2" in printed and "selfblend" in printed
    with pytest.raises(SystemExit):
        D.main(["degradations", "--data", str(root), "--split", "test", "--model", ckpt, "--model", ckpt])
    assert "only ensemble takes several" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        D.main(["ensemble", "--data", str(root), "--split", "test", "--model", ckpt])
    assert "at least two --model" in capsys.readouterr().err


def test_readout_scores_by_hand():
    real = np.full((3, 4), 0.5)
    fake = np.array([[1.0, 0.0, 0.0, 0.0],   # one strong cell: diluted to 0.25 by the mean
                     [0.3, 0.3, 0.3, 0.3],   # spread evenly
                     [0.6, 0.2, 0.0, 0.0]])
    s = D.readout_scores(fake, real, cells=(1, 2, 4))
    assert list(s) == [D.PAPER_READOUT, "the fake half's strongest 1", "the fake half's strongest 2"]  # 4 = all
    assert s[D.PAPER_READOUT] == pytest.approx([-0.25, -0.2, -0.3])
    assert s["the fake half's strongest 1"] == pytest.approx([0.5, -0.2, 0.1])
    assert s["the fake half's strongest 2"] == pytest.approx([0.0, -0.2, -0.1])


def test_readout_of_every_cell_is_the_models_own_evidence(built, capsys):
    root, model = built
    data = E.open_split(root, "test")
    cells = D.cell_activations(model, data)
    assert cells["fake"].shape == cells["real"].shape == (10, 256)
    assert cells["area"][cells["label"] == 0] == pytest.approx(0.25)  # every mask is a quarter of the crop
    own = D.evidence(E.collect(model, data, precision="fp32"))
    assert D.readout_scores(cells["fake"], cells["real"])[D.PAPER_READOUT] == pytest.approx(own, abs=1e-5)

    result = D.readouts(model, data, cells=(16,), n_boot=50)
    paper, top = result["rows"]
    # an untrained network scores these faces alike to the seventh digit, so rank by the very numbers the table
    # ranks (``own`` orders them by float rounding, which differs between CPUs)
    paper_scores = D.readout_scores(cells["fake"], cells["real"])[D.PAPER_READOUT]
    assert paper["auc"]["all"] == pytest.approx(M.roc_auc(cells["label"] == 0, paper_scores))
    assert set(paper["auc"]) == {"all", "deepfake", "selfblend", "faceswap"}  # no self-blend under a tenth here
    d, lo, hi = top["diff"]["all"]
    assert d == pytest.approx(top["auc"]["all"] - paper["auc"]["all"]) and lo <= hi
    D.main(["readout", "--data", str(root), "--split", "test", "--model", str(root / "ckpt")])
    assert "the fake half's strongest 64" in capsys.readouterr().out


def test_fit_logistic_separates_a_linear_rule_and_its_penalty_shrinks_the_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] - 2 * x[:, 2] > 0).astype(float)  # the middle column is noise
    logits = D.fit_logistic(x, y, l2=1e-4)(x)
    assert M.roc_auc(y, logits) > 0.999
    strong = D.fit_logistic(x, y, l2=10.0)(x)
    assert np.ptp(strong) < np.ptp(logits) / 5  # a heavy penalty flattens the logits
    assert M.roc_auc(y, strong) > 0.99  # but keeps the direction


def test_probe_features_hold_the_paper_evidence_and_a_timm_backbone_s_stages(built):
    root, model = built
    data = E.open_split(root, "test")
    f = D.pooled_features(model, data)
    n, width = 10, model.latent_channels
    assert f["latent"].shape == (n, 3 * width) and "stages" not in f  # the paper's encoder has no timm stages
    own = D.evidence(E.collect(model, data, precision="fp32"))
    means = f["latent"][:, :width]
    assert means[:, : width // 2].mean(1) - means[:, width // 2:].mean(1) == pytest.approx(own, abs=1e-5)
    assert f["evidence"] == pytest.approx(own, abs=1e-5)

    pytest.importorskip("timm")
    lite = ClassNSeg(encoder="timm/tf_efficientnet_lite0", latent_channels=16).eval()
    g = D.pooled_features(lite, data)
    # five stages to stride 16: 16 + 24 + 40 + 80 + 112 channels, three statistics each
    assert g["stages"].shape == (n, 3 * (16 + 24 + 40 + 80 + 112))
    assert not lite.encoder.backbone.blocks[0]._forward_hooks  # the hooks are removed afterwards


def test_probe_cli_scores_each_probe_beside_the_paper(built, tmp_path, capsys, monkeypatch):
    from train.diagnose import probe

    root, model = built
    out = tmp_path / "probe.json"
    extracted = []
    features = probe.pooled_features
    monkeypatch.setattr(probe, "pooled_features", lambda m, d, **kw: extracted.append(len(d)) or features(m, d, **kw))
    D.main(["probe", "--data", str(root), "--split", "test", "--fit-split", "test", "--model", str(root / "ckpt"),
            "--json", str(out)])
    text = capsys.readouterr().out
    assert "probes fitted on 10 crops" in text and "probe: latent" in text
    assert extracted == [10]  # fitted on the split it scores: the features are extracted once
    r = json.loads(out.read_text())
    paper, latent = r["rows"]
    assert paper["readout"] == D.PAPER_READOUT and latent["readout"] == "probe: latent"
    f = D.pooled_features(model, E.open_split(root, "test"))  # the evidence the probe ranks (see the readout test)
    assert paper["auc"]["all"] == pytest.approx(M.roc_auc(f["label"] == 0, f["evidence"]))
    d, lo, hi = latent["diff"]["all"]
    assert d == pytest.approx(latent["auc"]["all"] - paper["auc"]["all"]) and lo <= hi


def test_scale_scores_the_trained_size_as_the_paper_and_resizes_the_others(built, capsys):
    root, model = built
    data = E.open_split(root, "test")
    big = D.cell_activations(model, data, size=320)
    assert big["fake"].shape == (10, 400)  # a 20 x 20 grid at stride 16
    assert big["area"][big["label"] == 0] == pytest.approx(0.25)  # the mask's share is the original's

    result = D.at_scales(model, data, scales=(0.75, 1.25, 1.0, 1.27), n_boot=50)
    assert result["sizes"] == [256, 192, 320]  # 1.0 is the trained size, 1.27 rounds to 320: each size once
    paper, small, large = result["rows"]
    cells = D.cell_activations(model, data)  # the trained size: the paper's read-out, as test_readout_... checks
    assert paper["readout"] == D.PAPER_READOUT
    evidence = cells["fake"].mean(1) - cells["real"].mean(1)
    assert paper["auc"]["all"] == pytest.approx(M.roc_auc(cells["label"] == 0, evidence))
    assert large["readout"] == "resized to 320x320"
    enlarged = big["fake"].mean(1) - big["real"].mean(1)
    assert large["auc"]["all"] == pytest.approx(M.roc_auc(big["label"] == 0, enlarged))
    d, lo, hi = small["diff"]["all"]
    assert d == pytest.approx(small["auc"]["all"] - paper["auc"]["all"]) and lo <= hi
    D.main(["scale", "--data", str(root), "--split", "test", "--model", str(root / "ckpt"), "--scale", "1.25"])
    assert "resized to 320x320" in capsys.readouterr().out


def test_degradation_scores_compare_with_train_compare(built, tmp_path, capsys):
    root, model = built
    scores = tmp_path / "deg.csv"
    D.main(["degradations", "--data", str(root), "--split", "test", "--model", str(root / "ckpt"),
            "--only", "none", "--only", "jpeg 40-60", "--precision", "fp32", "--scores", str(scores)])
    from train.compare import main as compare_main, read_scores

    table = read_scores(scores)
    assert list(table["models"]) == ["none", "jpeg 40-60"]
    s = E.collect(model, E.open_split(root, "test"), precision="fp32")
    np.testing.assert_allclose(table["models"]["none"], s["p_fake"], rtol=1e-5)
    assert len(table["models"]["jpeg 40-60"]) == len(s["p_fake"])  # (this tiny model scores near-constant)
    capsys.readouterr()
    assert compare_main([str(scores), "--base", "none", "--boot", "50"]) == 0
    assert "jpeg 40-60" in capsys.readouterr().out


def test_named_degradation_scores_compare_across_checkpoints(built, tmp_path, capsys):
    root, _ = built
    files = []
    for name in ("a", "b"):
        files.append(tmp_path / f"{name}.csv")
        D.main(["degradations", "--data", str(root), "--split", "test", "--model", str(root / "ckpt"),
                "--only", "none", "--precision", "fp32", "--scores", str(files[-1]), "--name", name])
    from train.compare import main as compare_main, read_scores

    assert list(read_scores(files[0])["models"]) == ["a: none"]
    capsys.readouterr()
    assert compare_main([str(f) for f in files] + ["--base", "a: none", "--model", "b: none", "--boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "b: none" in out and "+0.000" in out  # one checkpoint twice: no difference


def test_scores_belong_to_degradations_only(built):
    root, _ = built
    with pytest.raises(SystemExit):
        D.main(["visibility", "--data", str(root), "--split", "test", "--model", str(root / "ckpt"),
                "--scores", "x.csv"])
    with pytest.raises(SystemExit):
        D.main(["degradations", "--data", str(root), "--split", "test", "--model", str(root / "ckpt"),
                "--name", "a"])
