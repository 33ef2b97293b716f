"""train.compare: DeLong's paired AUC test, the weighted AUC behind the by-person bootstrap, and the CLI on scores
written by train.evaluate --scores."""

import csv
import json
import math

import numpy as np
import pytest

from train import compare as C
from train import evaluate as E
from train import metrics as M


def _delong_by_definition(y, a, b):
    """DeLong's structural components straight from the definition (every fake against every real)."""
    y = np.asarray(y).astype(bool)
    out = []
    for s in (a, b):
        x, r = s[y], s[~y]
        psi = (x[:, None] > r[None, :]) + 0.5 * (x[:, None] == r[None, :])
        out.append((psi.mean(axis=1), psi.mean(axis=0)))
    (v10a, v01a), (v10b, v01b) = out
    m, n = len(v10a), len(v01a)
    var = (np.var(v10b - v10a, ddof=1) / m) + (np.var(v01b - v01a, ddof=1) / n)
    return v10a.mean(), v10b.mean(), math.sqrt(var)


def test_delong_hand_case():
    # fakes (y=1) and reals; model a misorders one of four pairs, model b none
    y = np.array([1, 1, 0, 0])
    a = np.array([0.7, 0.4, 0.1, 0.6])
    b = np.array([0.9, 0.8, 0.1, 0.6])
    d = C.delong_test(y, a, b)
    assert d["auc_a"] == pytest.approx(0.75) and d["auc_b"] == pytest.approx(1.0)
    assert d["diff"] == pytest.approx(0.25)
    # b - a components: per fake (0, 0.5), per real (0, 0.5); variances 0.125/2 + 0.125/2
    assert d["se"] == pytest.approx(math.sqrt(0.125))
    assert d["p"] == pytest.approx(math.erfc(0.25 / math.sqrt(0.125) / math.sqrt(2)))


def test_delong_matches_definition_with_ties():
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.4).astype(int)
    a = np.round(rng.normal(y * 1.0, 1.0), 1)  # rounding makes ties
    b = np.round(a + rng.normal(y * 0.3, 0.5), 1)
    d = C.delong_test(y, a, b)
    auc_a, auc_b, se = _delong_by_definition(y, a, b)
    assert d["auc_a"] == pytest.approx(auc_a) and d["auc_a"] == pytest.approx(M.roc_auc(y, a))
    assert d["auc_b"] == pytest.approx(auc_b) and d["se"] == pytest.approx(se)
    assert d["ci"][0] < d["diff"] < d["ci"][1]


def test_delong_identical_scores():
    y = np.array([1, 0, 1, 0, 1])
    s = np.array([0.9, 0.2, 0.4, 0.5, 0.8])
    d = C.delong_test(y, s, s)
    assert d["diff"] == 0 and d["se"] == 0 and d["p"] == 1.0
    with pytest.raises(ValueError):
        C.delong_test([1, 1], [0.1, 0.2], [0.3, 0.4])


def test_weighted_auc_equals_auc_of_repeated_sample():
    rng = np.random.default_rng(0)
    y = (rng.random(60) < 0.5).astype(int)
    s = np.round(rng.normal(y, 1.0), 1)
    w = rng.integers(0, 4, size=60)
    expanded = np.repeat(np.arange(60), w)
    assert C.weighted_auc(y, s, w) == pytest.approx(M.roc_auc(y[expanded], s[expanded]))
    many = C.weighted_auc(y, s, np.stack([w, np.ones(60)]))
    assert many.shape == (2,) and many[1] == pytest.approx(M.roc_auc(y, s))
    assert math.isnan(C.weighted_auc(y, s, y * 1.0))  # no real left


def test_person_bootstrap_interval_separates_a_clear_gain_only():
    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(150), 3)
    y = np.tile([0, 1, 1], 150)  # each person: one real, two fakes
    a = rng.normal(y * 0.8, 1.0)
    better = a + y * 1.0
    lo, hi = C.person_bootstrap_difference(y, a, better, people, n_boot=400, seed=0)
    assert 0 < lo < hi
    noise = a + rng.normal(0, 0.05, len(a))
    lo, hi = C.person_bootstrap_difference(y, a, noise, people, n_boot=400, seed=0)
    assert lo < 0 < hi
    assert C.person_bootstrap_difference(y, a, noise, people, n_boot=400, seed=0) == (lo, hi)  # seeded


def test_scores_file_from_evaluate_and_compare_cli(tmp_path, random_checkpoint, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    from PIL import Image

    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "label", "method", "person", "split"])
        for i in range(8):
            fam = ["", "deepfake", "selfblend", ""][i % 4]
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
            w.writerow([f"images/{i}.png", "", "fake" if fam else "real", fam, f"p{i // 4}", "test"])
    ckpt = tmp_path / "ckpt"
    random_checkpoint(ckpt)
    scores = tmp_path / "s.csv"
    assert E.main(["--data", str(root), "--split", "test", "--model", str(ckpt), "--model", str(ckpt),
                   "--scores", str(scores)]) == 0
    table = C.read_scores(scores)
    assert list(table["models"]) == ["ckpt", "ckpt.2"] and len(table["label"]) == 8
    assert list(table["family"][:3]) == ["real", "deepfake", "selfblend"] and table["label"][0] == 1
    np.testing.assert_allclose(table["models"]["ckpt"], table["models"]["ckpt.2"], atol=1e-6)
    capsys.readouterr()
    out = tmp_path / "c.json"
    assert C.main([str(scores), "--boot", "50", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ckpt.2 against ckpt" in printed and "selfblend" in printed
    rows = json.loads(out.read_text())["comparisons"][0]["rows"]
    assert [r["family"] for r in rows] == ["all", "deepfake", "selfblend"]
    assert rows[0]["n_real"] == 4 and rows[0]["n_fake"] == 4 and abs(rows[0]["diff"]) < 1e-6
    with pytest.raises(SystemExit):
        C.main([str(scores), "--model", "nope"])
    # a second run of the same images, its rows in another order, joins by image
    lines = scores.read_text().splitlines()
    again = tmp_path / "again.csv"
    again.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    joined = C.join_scores([C.read_scores(scores), C.read_scores(again)])
    assert list(joined["models"]) == ["ckpt", "ckpt.2", "ckpt.3", "ckpt.2.2"]  # a taken name gets a suffix
    np.testing.assert_array_equal(joined["models"]["ckpt.3"], table["models"]["ckpt"])
    assert C.main([str(scores), str(again), "--model", "ckpt.3", "--boot", "20"]) == 0
    # a train.pack copy's names (folder and extension changed) join by file name, and only when asked to
    packed = tmp_path / "packed.csv"
    packed.write_text("\n".join([lines[0], *("p000/" + line.replace(".png,", ".webp,", 1)
                                              for line in reversed(lines[1:]))]) + "\n")
    assert C.read_scores(packed)["image"][-1] == "p000/images/0.webp"
    with pytest.raises(SystemExit):
        C.main([str(scores), str(packed)])
    by_stem = C.join_scores([C.read_scores(scores), C.read_scores(packed)], by="stem")
    np.testing.assert_array_equal(by_stem["models"]["ckpt.3"], table["models"]["ckpt"])
    assert C.main([str(scores), str(packed), "--by", "stem", "--model", "ckpt.3", "--boot", "20"]) == 0
    twice = {"image": np.array(["a/x.png", "b/x.png"]), "models": {"m": np.array([0.1, 0.2])}}
    with pytest.raises(ValueError, match="same file name"):  # two folders' x.png: no way to tell them apart
        C.join_scores([twice, twice], by="stem")
    other = tmp_path / "other.csv"
    other.write_text("\n".join(lines[:-1]) + "\n")  # one image short
    with pytest.raises(SystemExit):
        C.main([str(scores), str(other)])
    # --name gives each --model its column, in order (a model without one keeps its folder's name)
    named = tmp_path / "named.csv"
    assert E.main(["--data", str(root), "--split", "test", "--model", str(ckpt), "--model", str(ckpt),
                   "--name", "shipped", "--scores", str(named)]) == 0
    assert list(C.read_scores(named)["models"]) == ["shipped", "ckpt"]
    with pytest.raises(SystemExit, match="one name per model"):
        E.main(["--data", str(root), "--model", str(ckpt), "--name", "a", "--name", "b"])


def _videos_result(model, threshold, frames_by_clip):
    return {"model": model, "threshold": threshold,
            "per_video": [{"video": f"c{i}.mp4", "frame_p_fake": list(p)} for i, p in enumerate(frames_by_clip)]}


def test_clip_frames_compared_pairwise(tmp_path, capsys):
    a = _videos_result("a", 0.5, [[0.9, 0.1, 0.2], [0.6, 0.7], [0.1]])  # flags 3 of 6
    b = _videos_result("b", 0.8, [[0.9, 0.1, 0.9], [0.6, 0.7], [0.1]])  # flags 2 of 6 at its stricter threshold
    r = C.compare_clip_frames(a, b, n_boot=300)
    assert r["frames"] == 6 and r["clips"] == 3
    assert r["rate_base"] == pytest.approx(0.5) and r["rate_model"] == pytest.approx(2 / 6)
    assert (r["both"], r["only_base"], r["only_model"]) == (1, 2, 1)
    assert r["clip_ci"][0] <= r["diff"] <= r["clip_ci"][1]
    with pytest.raises(ValueError):
        C.compare_clip_frames(a, _videos_result("c", 0.5, [[0.1], [0.6, 0.7], [0.1]]))
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"mode": "videos", "results": [a, b]}))
    assert C.main(["--videos", str(path), "--boot", "100"]) == 0
    assert "b against a" in capsys.readouterr().out
    solo = tmp_path / "solo.json"  # a model scored in a separate run joins the first file's
    solo.write_text(json.dumps({"mode": "videos", "results": [a]}))
    assert C.main(["--videos", str(path), str(solo), "--model", "a.2", "--boot", "100"]) == 0
    assert "a.2 against a" in capsys.readouterr().out
    # matched detection rates: a scores file holding both models' scores of two fakes and two reals
    scores = tmp_path / "s.csv"
    scores.write_text("image,person,family,label,a,b\n"
                      "f0,p0,deepfake,0,0.95,0.85\nf1,p1,deepfake,0,0.75,0.4\n"
                      "r0,p0,real,1,0.55,0.3\nr1,p1,real,1,0.1,0.2\n")
    rows = C.matched_clip_frames(b, C.read_scores(scores), "b", [0.5, 1.0])
    # b catches half its fakes above 0.85's next lower float (frames 0.9, 0.9 of 6), all of them above 0.4's
    assert [r["tpr_achieved"] for r in rows] == [0.5, 1.0]
    assert rows[0]["frames_flagged"] == pytest.approx(2 / 6) and rows[0]["reals_flagged"] == 0.0
    assert rows[1]["frames_flagged"] == pytest.approx(4 / 6) and rows[1]["reals_flagged"] == 0.0
    assert C.main(["--videos", str(path), "--matched", str(scores), "--tpr", "0.5", "--boot", "100"]) == 0
    assert "at matched shares" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        C.main([])
    with pytest.raises(SystemExit):
        C.main([str(tmp_path / "absent.csv")])


def test_mean_log_odds_ensemble_column(tmp_path, capsys):
    table = {"models": {"a": np.array([0.5, 0.1]), "b": np.array([0.9, 0.1])}}
    # log-odds 0 and ln 9 average to ln 3: p = 3 / (3 + 1)
    np.testing.assert_allclose(C.mean_log_odds(table, ["a", "b"]), [0.75, 0.1])
    # each model ranks one fake below the reals; their ensemble ranks every fake above them
    rows = [("r0", 1, 0.2, 0.2), ("r1", 1, 0.3, 0.3), ("r2", 1, 0.4, 0.4),
            ("f0", 0, 0.1, 0.9), ("f1", 0, 0.9, 0.1), ("f2", 0, 0.8, 0.8)]
    scores = tmp_path / "s.csv"
    with open(scores, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "person", "family", "label", "a", "b"])
        for name, label, a, b in rows:
            w.writerow([f"images/{name}.jpg", name, "real" if label else "reenact", label, a, b])
    out = tmp_path / "c.json"
    assert C.main([str(scores), "--mean", "a+b", "--base", "a", "--model", "a+b", "--boot", "50",
                   "--json", str(out)]) == 0
    assert "a+b against a" in capsys.readouterr().out
    first = json.loads(out.read_text())["comparisons"][0]["rows"][0]
    assert first["auc_base"] == pytest.approx(6 / 9) and first["auc_model"] == pytest.approx(1.0)
    for bad, why in [("a", "two models or more"), ("a+a", "two models or more"), ("a+nope", "no model 'nope'")]:
        with pytest.raises(SystemExit):
            C.main([str(scores), "--mean", bad])
        assert why in capsys.readouterr().err
    with pytest.raises(SystemExit):
        C.main(["--videos", str(out), "--mean", "a+b"])
    assert "goes with scores" in capsys.readouterr().err
