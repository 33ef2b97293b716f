"""Ensemble checkpoints: the mean of the members' calibrated log-odds, the ensemble's own calibration, the files,
and the refusals."""

import json

import pytest
import torch

from mtl import ModelLoadError, load_model
from mtl.ensemble import Ensemble
from mtl.model import ClassNSeg
from tests.media import tiny_dataset
from train import calibrate
from train.ensemble import main as ensemble_main


def _member(path, seed, scale, bias):
    torch.manual_seed(seed)
    model = ClassNSeg(method_head=True).eval()
    model.set_calibration(scale, bias, 0.7)
    model.save_pretrained(path)
    return model


@pytest.fixture
def joined(tmp_path):
    a = _member(tmp_path / "m0", 0, 40.0, -0.5)
    b = _member(tmp_path / "m1", 1, 25.0, 0.3)
    assert ensemble_main([str(tmp_path / "m0"), str(tmp_path / "m1"), "--out", str(tmp_path / "ens")]) == 0
    return tmp_path / "ens", a, b


def _log_odds(p):
    return torch.log(p / (1 - p))


def test_the_ensemble_scores_the_mean_of_its_members_log_odds(joined):
    path, a, b = joined
    ens = load_model(path)
    assert isinstance(ens, Ensemble) and ens.member_dirs == ["a", "b"]
    assert (ens.calibration_scale, ens.calibration_bias, ens.threshold) == (1.0, 0.0, 0.5)  # identity until fitted
    torch.manual_seed(5)
    x = torch.randn(4, 3, 256, 256) * 0.6
    pa, pb, pe = a.predict(x, "fp32"), b.predict(x, "fp32"), ens.predict(x, "fp32")
    mean = (_log_odds(pa.p_fake.double()) + _log_odds(pb.p_fake.double())) / 2
    torch.testing.assert_close(pe.margin.double(), mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pe.p_fake.double(), torch.sigmoid(mean), rtol=1e-4, atol=1e-5)
    assert torch.equal(pe.is_fake, pe.p_fake > 0.5)
    torch.testing.assert_close(pe.activations, (pa.activations + pb.activations) / 2)
    # each member decodes the half the ensemble's verdict names, and the masks are averaged
    keep = (~pe.is_fake).long()
    with torch.inference_mode():
        masks = [m.decode_views(*m.encode_views(x, "fp32")[:2], keep, "fp32")[0] for m in (a, b)]
    torch.testing.assert_close(pe.mask, (masks[0] + masks[1]) / 2)
    assert pe.method_probs.shape == (4, pa.method_probs.shape[1])
    torch.testing.assert_close(pe.method_probs.sum(dim=1), torch.ones(4))
    # the fast path agrees with the exact network
    torch.testing.assert_close(ens.predict(x).p_fake, pe.p_fake, atol=0.05, rtol=0)
    # with torch on one thread the members run side by side on threads of their own: the same answers
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        side_by_side = ens.predict(x, "fp32")
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(side_by_side.p_fake, pe.p_fake, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(side_by_side.mask, pe.mask, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(side_by_side.method_probs, pe.method_probs, rtol=1e-4, atol=1e-6)
    # the threshold decides
    ens.set_calibration(1.0, 0.0, threshold=float(pe.p_fake.max()))
    assert not ens.predict(x, "fp32").is_fake.any()


def test_the_files_and_the_members_own_calibrations(joined):
    path, a, b = joined
    config = json.loads((path / "config.json").read_text())
    assert config["members"] == ["a", "b"] and config["name"] == "ens"
    assert not (path / "model.safetensors").exists()
    for sub, member in (("a", a), ("b", b)):
        loaded = load_model(path / sub)
        assert (loaded.calibration_scale, loaded.calibration_bias) == (member.calibration_scale,
                                                                        member.calibration_bias)


@pytest.mark.slow
def test_calibrate_fits_the_ensemble_on_its_mean_log_odds(joined, tmp_path, astronaut):
    path, a, b = joined
    root = tiny_dataset(tmp_path / "data", astronaut)
    out = tmp_path / "calibrated"
    assert calibrate.main(["--data", str(root), "--split", "val", "--model", str(path), "--out", str(out),
                           "--target-fpr", "0.2"]) == 0
    ens = load_model(out)
    report = json.loads((out / "calibration.json").read_text())
    assert (ens.calibration_scale, ens.calibration_bias, ens.threshold) == (report["scale"], report["bias"],
                                                                             report["threshold"])
    assert ens.calibration_scale != 1.0
    # the members' calibrations are kept: they weigh the members' evidence
    assert load_model(out / "a").calibration_scale == a.calibration_scale
    # the reloaded ensemble flags the validation reals the fit said it would
    from train.evaluate import evaluate, open_split

    r = evaluate(ens, open_split(root, "val"))
    assert r["overall"]["fpr"] == pytest.approx(report["after"]["fpr"])
    with pytest.raises(SystemExit):
        calibrate.main(["--data", str(root), "--split", "val", "--model", str(out), "--test-time-flip"])


def test_broken_ensembles_are_refused_with_a_reason(joined, tmp_path, capsys):
    path, _, _ = joined
    config = json.loads((path / "config.json").read_text())
    for members, says in ((["a", "../m0"], "sub-directory names"), (["a"], "two sub-directory names"),
                          (["a", "c"], "ens/c. is not a directory")):
        (path / "config.json").write_text(json.dumps(dict(config, members=members)))
        with pytest.raises(ModelLoadError, match=says):
            load_model(path)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_:
        ensemble_main([str(path / "a"), "--out", str(tmp_path / "one")])
    assert exit_.value.code == 2 and "two member checkpoints or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ensemble_main([str(path), str(path / "a"), "--out", str(tmp_path / "nested")])
    assert "itself an ensemble" in capsys.readouterr().err


def test_push_to_hub_uploads_the_folder_load_model_reads(joined, monkeypatch):
    import huggingface_hub

    path, _, _ = joined
    calls = []

    class _Api:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create", repo_id, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            files = sorted(str(f.relative_to(folder_path)) for f in Path(folder_path).rglob("*") if f.is_file())
            calls.append(("upload", repo_id, files))
            assert isinstance(load_model(folder_path), Ensemble)  # what is uploaded loads as the ensemble

    monkeypatch.setattr(huggingface_hub, "HfApi", _Api)
    load_model(path).push_to_hub("someone/ensemble", token="t")
    assert calls == [("token", "t"), ("create", "someone/ensemble", True),
                     ("upload", "someone/ensemble", ["a/config.json", "a/model.safetensors", "b/config.json",
                                                     "b/model.safetensors", "config.json"])]
