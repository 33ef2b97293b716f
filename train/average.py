"""Average the weights of several checkpoints of one training trajectory (checkpoint averaging, as in SWA).

    python -m train.average --out DIR CKPT CKPT [CKPT ...] [--weights W W ...] [--calibrate ROOT [--target-fpr F]]

Each CKPT is a checkpoint directory (``config.json`` + ``model.safetensors``, e.g. a run's ``best/``) or a trainer's
``last.pt``. They must share the architecture (encoder, latent width, method head). Floating-point tensors, the
batch-norm running statistics included, are averaged with equal weights, or with ``--weights`` (one non-negative
number per checkpoint, scaled to sum to 1); integer buffers are taken from the first.

With two checkpoints, a fine-tune's start and its end, ``--weights 0.5 0.5`` is the weight-space interpolation of
robust fine-tuning (WiSE-FT, Wortsman et al. 2022): a point on the straight line between them, which often keeps
what the start does well on data unlike the fine-tune's (here: real video) and part of what the fine-tune gained.

Averaging only makes sense for checkpoints that share a start: a run and its continuations, or fine-tunes of one
checkpoint (a "model soup", Wortsman et al. 2022; the shipped default's fourth version is the mean of two). Weights
from independent runs sit in different basins and their mean is a broken network.

The batch-norm running statistics of a mean are a mean of statistics, not the statistics of the mean's own
activations. ``--recompute-bn ROOT`` measures them afresh (as SWA's ``update_bn`` does): the averaged network reads
``--bn-crops`` unaugmented crops of ROOT's train split in training mode, without gradients, each decoder reading the
true label's half as in training, and every batch-norm layer keeps the plain mean of what it saw. On the mean that
made the shipped default's fourth version this cost reenactments 0.006 of test AUC (the card's research log): the
averaged statistics, which come from the batches the inputs trained on, served better there.

The probability calibration of the inputs does not carry over to the mean, so the output starts with the identity
map; ``--calibrate ROOT`` fits it on ROOT's validation split right away (the same code as ``train.calibrate``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ARCHITECTURE = ("encoder", "latent_channels", "method_head")


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, state dict) of a checkpoint directory or a trainer's ``last.pt``."""
    path = Path(path)
    if path.is_dir():
        from mtl import load_model

        model = load_model(path)
        return model.config, model.state_dict()
    if path.suffix == ".pt" and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "model" not in state or "config" not in state:
            raise ValueError(f"{path}: not a trainer state "
                             "(expected the 'model' and 'config' of train.train's last.pt)")
        return dict(state["config"]), state["model"]
    raise ValueError(f"{path}: neither a checkpoint directory nor a trainer's last.pt")


def mixing_weights(weights: list[float] | None, n: int) -> list[float]:
    """``weights`` scaled to sum to 1 (equal weights when None); refuses a wrong count or negative weights."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} checkpoints: give one per checkpoint")
    if any(not w >= 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"weights must be non-negative numbers, not all 0: {weights}")
    return [w / sum(weights) for w in weights]


def average_state_dicts(states: list[dict[str, torch.Tensor]],
                        weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """The element-wise weighted mean of floating-point tensors (in float64; equal weights by default, else
    ``weights`` scaled to sum to 1); other tensors from the first."""
    if not states:
        raise ValueError("nothing to average")
    weights = mixing_weights(weights, len(states))
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if set(s) != set(keys):
            raise ValueError(f"checkpoint {i} has different tensors from checkpoint 0: "
                             f"{sorted(set(s) ^ set(keys))[:5]}")
    out = {}
    for k in keys:
        first = states[0][k]
        if any(s[k].shape != first.shape for s in states):
            raise ValueError(f"tensor {k!r} differs in shape between checkpoints")
        if first.is_floating_point():
            out[k] = sum(w * s[k].detach().double() for w, s in zip(weights, states)).to(first.dtype)
        else:
            out[k] = first.clone()
    return out


def average_checkpoints(paths: list[str | Path], name: str | None = None, weights: list[float] | None = None):
    """A ClassNSeg holding the (weighted) mean weights of ``paths`` (identity calibration, threshold 0.5)."""
    from mtl.model import ClassNSeg

    weights = mixing_weights(weights, len(paths))

    configs, states = zip(*(read_checkpoint(p) for p in paths))
    for p, c in zip(paths[1:], configs[1:]):
        differs = {k: (configs[0].get(k), c.get(k)) for k in ARCHITECTURE if c.get(k) != configs[0].get(k)}
        if differs:
            raise ValueError(f"{p}: a different architecture from {paths[0]}: {differs}")
    config = {k: configs[0][k] for k in ARCHITECTURE}
    # the inputs' descriptions quote their own figures, which the average does not share
    if len(set(weights)) == 1:
        description = "Mean of the weights of " + ", ".join(str(p) for p in paths) + " (python -m train.average)."
    else:
        description = ("Weighted mean of the weights of " + ", ".join(f"{p} ({w:g})" for p, w in zip(paths, weights))
                       + " (python -m train.average --weights).")
    model = ClassNSeg(**config, name=name or configs[0].get("name", "classnseg"), description=description)
    model.load_state_dict(average_state_dicts([{k: v.cpu() for k, v in s.items()} for s in states], weights))
    return model.eval()


@torch.no_grad()
def recompute_batchnorm(model, data, crops: int = 2048, batch_size: int = 64, seed: int = 0) -> int:
    """Reset every batch-norm layer's running statistics to the plain mean over ``crops`` items of ``data`` (a seeded
    random subset; all when it has fewer), read in training mode with the true label's half decoded; returns the
    number of crops read. The model comes back in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:crops].tolist()
    subset = torch.utils.data.Subset(data, order)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)
    model.train()
    try:
        for batch in loader:
            model(batch["image"], gate=batch["label"].reshape(-1).long(), reconstruct=False)
    finally:
        for m, momentum in saved.items():
            m.momentum = momentum
        model.eval()
    return len(subset)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint directories or last.pt files that share a start")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", help="model name stored in config.json (default: the first checkpoint's)")
    p.add_argument("--weights", type=float, nargs="+", metavar="W",
                   help="one weight per checkpoint, scaled to sum to 1 (default: equal); e.g. a fine-tune's start "
                        "and end with 0.5 0.5 for the weight-space interpolation of WiSE-FT")
    p.add_argument("--recompute-bn", type=Path, metavar="ROOT",
                   help="measure the batch-norm statistics afresh on ROOT's train split (unaugmented crops)")
    p.add_argument("--bn-crops", type=int, default=2048, help="--recompute-bn: how many crops (a seeded subset)")
    p.add_argument("--calibrate", type=Path, metavar="ROOT", help="fit the calibration on ROOT's val split")
    p.add_argument("--target-fpr", type=float, default=0.01)
    args = p.parse_args(argv)
    if len(args.checkpoints) < 2:
        p.error("give at least two checkpoints")
    if args.bn_crops < 1:
        p.error("--bn-crops must be at least 1")

    try:
        model = average_checkpoints(args.checkpoints, args.name, args.weights)
    except ValueError as e:  # wrong inputs: one line for the user, not a traceback
        p.error(str(e))
    if args.recompute_bn is not None:
        from .data import ManifestDataset

        try:
            train_split = ManifestDataset(args.recompute_bn, "train")
        except (OSError, ValueError) as e:
            p.error(f"--recompute-bn: {e}")
        n = recompute_batchnorm(model, train_split, args.bn_crops)
        model.description += f" Batch-norm statistics measured afresh on {n} crops of {args.recompute_bn} (train)."
    model.save_pretrained(args.out)
    print(f"averaged {len(args.checkpoints)} checkpoints -> {args.out}")
    if args.calibrate is not None:
        from .calibrate import main as calibrate

        return calibrate(["--data", str(args.calibrate), "--split", "val", "--model", str(args.out),
                          "--target-fpr", str(args.target_fpr)])
    print(f"its calibration is the identity: fit it with python -m train.calibrate --data ROOT --model {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
