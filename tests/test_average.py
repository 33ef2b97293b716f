"""Checkpoint averaging: the mean of the weights, from directories and trainer states, and refusals."""

import pytest
import torch

from mtl import load_model
from mtl.model import ClassNSeg
from tests.media import tiny_dataset
from train.average import average_checkpoints, main as average_main


def _checkpoint(path, seed, **kwargs):
    torch.manual_seed(seed)
    model = ClassNSeg(method_head=True, **kwargs).eval()
    model.set_calibration(5.0, 1.0, 0.8)
    model.save_pretrained(path)
    return model


def test_the_average_is_the_mean_of_the_weights_and_starts_uncalibrated(tmp_path):
    a = _checkpoint(tmp_path / "a", 0)
    b = _checkpoint(tmp_path / "b", 1)
    torch.manual_seed(2)
    c = ClassNSeg(method_head=True).eval()
    # a trainer's last.pt counts as a checkpoint too
    torch.save({"model": c.state_dict(), "config": c.config, "epoch": 3}, tmp_path / "last.pt")

    average_main([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "last.pt"), "--out", str(tmp_path / "avg")])
    mean = load_model(tmp_path / "avg")
    sa, sb, sc, sm = a.state_dict(), b.state_dict(), c.state_dict(), mean.state_dict()
    for key in ("encoder.layers.0.weight", "method_head.5.bias"):
        assert not torch.equal(sa[key], sb[key])
        torch.testing.assert_close(sm[key], (sa[key] + sb[key] + sc[key]) / 3)
    bn_stats = [k for k in sm if k.endswith("running_var")]
    assert bn_stats and all(torch.allclose(sm[k], (sa[k] + sb[k] + sc[k]) / 3) for k in bn_stats)
    # the inputs' calibration does not describe the mean: identity until refitted
    assert (mean.calibration_scale, mean.calibration_bias, mean.threshold) == (1.0, 0.0, 0.5)
    assert mean.method_head is not None
    # nor does the first input's description, which quotes that checkpoint's own figures
    assert mean.config.get("description", "").startswith("Mean of the weights of ")


def test_different_architectures_are_refused(tmp_path):
    _checkpoint(tmp_path / "a", 0)
    _checkpoint(tmp_path / "b", 1, latent_channels=64)
    with pytest.raises(ValueError, match="different architecture"):
        average_checkpoints([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="neither a checkpoint directory"):
        average_checkpoints([tmp_path / "a", tmp_path / "missing"])


def test_cli_reports_wrong_inputs_in_one_line(tmp_path, capsys):
    from train.average import main

    _checkpoint(tmp_path / "a", 0)
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "out"), str(tmp_path / "a"), str(tmp_path / "missing")])
    assert exit_.value.code == 2
    assert "neither a checkpoint directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_weights_interpolate_between_a_fine_tunes_start_and_end(tmp_path):
    a = _checkpoint(tmp_path / "a", 0)
    b = _checkpoint(tmp_path / "b", 1)
    average_main([str(tmp_path / "a"), str(tmp_path / "b"), "--weights", "3", "1", "--out", str(tmp_path / "wise")])
    wise = load_model(tmp_path / "wise")
    sa, sb, sw = a.state_dict(), b.state_dict(), wise.state_dict()
    for key in ("encoder.layers.0.weight", "method_head.5.bias", "encoder.layers.0.bias"):
        torch.testing.assert_close(sw[key], 0.75 * sa[key] + 0.25 * sb[key])
    assert "(0.75)" in wise.config["description"] and "(0.25)" in wise.config["description"]
    # one end of the line is that checkpoint's weights exactly
    start = average_checkpoints([tmp_path / "a", tmp_path / "b"], weights=[1.0, 0.0]).state_dict()
    assert all(torch.equal(start[k], sa[k]) for k in sa)


@pytest.mark.parametrize("weights, message", [(["1"], "1 weights for 2 checkpoints"),
                                              (["1", "-1"], "non-negative"), (["0", "0"], "not all 0")])
def test_wrong_weights_are_refused_in_one_line(tmp_path, capsys, weights, message):
    _checkpoint(tmp_path / "a", 0)
    _checkpoint(tmp_path / "b", 1)
    with pytest.raises(SystemExit) as exit_:
        average_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--weights", *weights])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batchnorm_statistics_are_measured_afresh(tmp_path, astronaut):
    from train.average import recompute_batchnorm
    from train.data import ManifestDataset

    model = ClassNSeg(method_head=True).eval()
    data = ManifestDataset(tiny_dataset(tmp_path / "d", astronaut), "train")
    first_bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first_bn.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().clone()))
    weights_before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
                      and "num_batches" not in k}
    assert recompute_batchnorm(model, data, crops=4, batch_size=2) == 4
    hook.remove()
    x = torch.cat(seen)  # what the layer read: two batches of two
    # the plain mean over the batches of each batch's statistics (equal batches: the mean over all crops)
    torch.testing.assert_close(first_bn.running_mean, x.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    batch_vars = torch.stack([b.var((0, 2, 3), unbiased=True) for b in seen])
    torch.testing.assert_close(first_bn.running_var, batch_vars.mean(0), rtol=1e-4, atol=1e-5)
    assert first_bn.momentum == 0.1 and not model.training  # left as found, in eval mode
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights_before.items())  # only the statistics change


def test_cli_recomputes_batchnorm_of_the_mean(tmp_path, astronaut, capsys):
    _checkpoint(tmp_path / "a", 0)
    _checkpoint(tmp_path / "b", 1)
    root = tiny_dataset(tmp_path / "d", astronaut)
    average_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "plain")])
    average_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "bn"),
                  "--recompute-bn", str(root), "--bn-crops", "4"])
    plain, bn = load_model(tmp_path / "plain").state_dict(), load_model(tmp_path / "bn").state_dict()
    stats = [k for k in plain if k.endswith("running_mean")]
    assert stats and all(not torch.allclose(plain[k], bn[k]) for k in stats[:3])
    assert torch.equal(plain["encoder.layers.0.weight"], bn["encoder.layers.0.weight"])
    assert "measured afresh on 4 crops" in load_model(tmp_path / "bn").config["description"]
    with pytest.raises(SystemExit):
        average_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "x"),
                      "--recompute-bn", str(tmp_path / "nowhere")])
    assert "--recompute-bn" in capsys.readouterr().err
