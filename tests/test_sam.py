"""Sharpness-aware steps (train.sam, --sam): the climb, the way back, and batch statistics counted once."""

import json

import pytest
import torch

from mtl import load_model
from tests.media import tiny_dataset
from train import sam
from train.train import main as train_main


def test_climb_moves_the_weights_rho_along_the_gradient_and_descend_puts_them_back():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    frozen = torch.nn.Linear(2, 2)  # a parameter without a gradient stays where it is
    before = [p.detach().clone() for p in net.parameters()]
    net(torch.randn(8, 5)).pow(2).mean().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))

    moved = sam.climb(list(net.parameters()) + list(frozen.parameters()), rho=0.05)

    assert len(moved) == len(grads)
    shifts = [p.detach() - b for p, b in zip(net.parameters(), before)]
    for shift, g in zip(shifts, grads):
        torch.testing.assert_close(shift, 0.05 * g / norm, atol=1e-7, rtol=1e-4)
    assert float(torch.sqrt(sum((s ** 2).sum() for s in shifts))) == pytest.approx(0.05, rel=1e-4)
    sam.descend(moved)
    for p, b in zip(net.parameters(), before):
        torch.testing.assert_close(p.detach(), b, atol=1e-7, rtol=0)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_statistics_kept_normalises_by_the_batch_but_leaves_the_running_statistics(momentum):
    bn = torch.nn.BatchNorm2d(3, momentum=momentum).train()
    bn(torch.randn(4, 3, 5, 5) + 2)
    mean, var, count = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    x = torch.randn(4, 3, 5, 5) * 3 - 1
    with sam.batch_statistics_kept(bn):
        y = bn(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)  # the batch's statistics
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert torch.equal(bn.num_batches_tracked, count)
    assert bn.momentum == momentum
    bn(x)
    assert not torch.equal(bn.running_mean, mean)  # outside, the batch counts again


def test_a_sam_step_takes_two_passes_counts_the_batch_once_and_steps_from_where_it_started(tmp_path, astronaut,
                                                                                           monkeypatch):
    """One step from the same start and batch, plain and with --sam: the batch norms' running statistics agree (the
    second pass left them alone), the weights do not (the step used the gradient at the climbed weights); at learning
    rate 0 both leave the weights where they started (the climb was taken back)."""
    import train.train

    passes = []
    loss = train.train.multitask_loss

    def counting_loss(*args, **kwargs):
        passes.append(1)
        return loss(*args, **kwargs)

    monkeypatch.setattr(train.train, "multitask_loss", counting_loss)
    data = tiny_dataset(tmp_path / "data", astronaut)
    models = {}
    for rho in (0.0, 0.05):
        for lr in (1e-3, 0.0):
            out = tmp_path / f"run-{rho}-{lr}"
            passes.clear()
            train_main(["--data", str(data), "--out", str(out), "--epochs", "1", "--max-steps", "1", "--batch-size",
                        "8", "--workers", "0", "--no-augment", "--seed", "3", "--sam", str(rho), "--lr", str(lr)])
            assert len(passes) == (2 if rho else 1)
            assert json.loads((out / "args.json").read_text())["sam"] == rho
            models[rho, lr] = load_model(out / "best").state_dict()
    plain, sharp = models[0.0, 1e-3], models[0.05, 1e-3]
    stats = [k for k in plain if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats
    for k in stats:
        torch.testing.assert_close(sharp[k], plain[k], atol=1e-6, rtol=1e-5)
    weights = [k for k in plain if k.endswith("weight") and plain[k].dim() == 4]
    assert any(not torch.allclose(sharp[k], plain[k], atol=1e-7) for k in weights)
    for k in weights:
        torch.testing.assert_close(models[0.05, 0.0][k], models[0.0, 0.0][k], atol=1e-7, rtol=0)


def test_a_negative_radius_is_refused(capsys):
    from train.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--out", "o", "--sam", "-0.05"])
    assert "--sam is the radius of SAM's climb" in capsys.readouterr().err
    assert parse_args(["--data", "d", "--out", "o", "--sam", "0.05"]).sam == 0.05
