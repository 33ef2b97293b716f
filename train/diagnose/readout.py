"""``readout``: the paper's read-out of the latent beside the fake half's strongest cells; the table both it and
``probe`` print (each score against the paper's, with an interval resampling people)."""

from __future__ import annotations

import numpy as np

from mtl.constants import FAMILIES
from train import metrics as M
from train.diagnose.common import fmt
from train.evaluate import ManifestFrames

READOUT_CELLS = (16, 64, 128)  # of the latent grid's cells (16 x 16 = 256 for a 256x256 face)
SMALL_MASK = 0.10  # share of the crop: a mouth, the eyes or the nose alone
PAPER_READOUT = "every cell (the paper)"


def cell_activations(model, data: ManifestFrames, batch_size: int = 32, size: int | None = None) -> dict:
    """Per face, each half's mean |latent| at every cell of the latent grid (the exact network, fp32): "fake" and
    "real" (N x cells), "label" (1 = real), "family", "area" (the share of the crop its mask covers). ``size``
    resizes each face to that many pixels a side before the encoder (bicubic, antialiased when shrinking; the mask's
    share is the original's)."""
    import torch
    import torch.nn.functional as F

    from mtl.model import half_cell_activations

    out = {k: [] for k in ("fake", "real", "label", "family", "area")}
    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.inference_mode():
        for batch in loader:
            image = batch["image"].float()
            if size is not None and size != image.shape[-1]:
                image = F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False,
                                      antialias=size < image.shape[-1])
            cells = half_cell_activations(model.encoder(model.encoder_input(image))).numpy()
            out["fake"].append(cells[:, 0])
            out["real"].append(cells[:, 1])
            out["label"].append(batch["label"].reshape(-1).numpy())
            out["family"].extend(batch["family"])
            out["area"].append(batch["mask"].float().mean(dim=(1, 2)).numpy())
    return {k: np.asarray(v) if k == "family" else np.concatenate(v) for k, v in out.items()}


def readout_scores(fake: np.ndarray, real: np.ndarray, cells=READOUT_CELLS) -> dict[str, np.ndarray]:
    """The evidence a face is fake under each read-out: the paper's (each half's mean over every cell, fake minus
    real), and the fake half's mean over only its ``k`` strongest cells minus the real half's mean."""
    scores = {PAPER_READOUT: fake.mean(1) - real.mean(1)}
    for k in cells:
        if k < fake.shape[1]:
            scores[f"the fake half's strongest {k}"] = np.sort(fake, axis=1)[:, -k:].mean(1) - real.mean(1)
    return scores


def readouts(model, data: ManifestFrames, cells=READOUT_CELLS, n_boot: int = 1000) -> dict:
    """Per-family AUC of each read-out, and its difference from the paper's with a 95% interval resampling people.

    The paper scores a half by its mean over the whole latent grid, so a forgery that covers a tenth of the face
    moves it a tenth as much as one that covers all of it. If small forgeries are missed because their evidence is
    diluted, a read-out of the strongest cells catches them; the "small masks" column (self-blends under
    ``SMALL_MASK`` of the crop) says whether it does.
    """
    c = cell_activations(model, data)
    people = np.array([r.get("person", "") for r in data.rows])
    table = against_the_paper(readout_scores(c["fake"], c["real"], cells), c["label"] == 0, c["family"], c["area"],
                              people, n_boot)
    return {"crops": len(data), "cells": int(c["fake"].shape[1]), **table}


def against_the_paper(scores: dict[str, np.ndarray], fake: np.ndarray, family: np.ndarray, area: np.ndarray,
                      people: np.ndarray, n_boot: int = 1000) -> dict:
    """Per-family AUC of each score (the first is the paper's read-out), and each other score's difference from it
    with a 95% interval resampling people; a column for self-blends under ``SMALL_MASK`` of the crop."""
    from train.compare import person_bootstrap_difference

    groups = [("all", fake)] + [(f, fake & (family == f)) for f in FAMILIES]
    groups.append((f"selfblend, mask under {100 * SMALL_MASK:.0f}%",
                   fake & (family == "selfblend") & (area < SMALL_MASK)))
    groups = [(g, sel) for g, sel in groups if sel.any()]
    base = next(iter(scores.values()))
    rows = []
    for name, score in scores.items():
        row = {"readout": name, "auc": {}, "diff": {}}
        for g, sel in groups:
            keep = sel | ~fake
            row["auc"][g] = M.roc_auc(fake[keep], score[keep]) if (~fake).any() else float("nan")
            if rows:
                lo, hi = person_bootstrap_difference(fake[keep].astype(np.int64), base[keep], score[keep],
                                                     people[keep], n_boot=n_boot)
                row["diff"][g] = [row["auc"][g] - rows[0]["auc"][g], lo, hi]
        rows.append(row)
    return {"groups": {g: int(s.sum()) for g, s in groups}, "rows": rows}


def format_readouts(r: dict) -> str:
    groups = list(r["groups"])
    lines = [f"AUC on {r['crops']} crops" + (f" ({r['cells']} latent cells)" if "cells" in r else "")
             + "; fakes per column: "
             + ", ".join(f"{g} {n}" for g, n in r["groups"].items()),
             f"{'read-out':32s} " + " ".join(f"{g[:24]:>24s}" for g in groups)]
    for row in r["rows"]:
        lines.append(f"{row['readout']:32s} " + " ".join(f"{fmt(row['auc'][g]):>24s}" for g in groups))
        if row["diff"]:
            cells = [f"{d:+.4f} ({lo:+.4f},{hi:+.4f})" for d, lo, hi in (row["diff"][g] for g in groups)]
            lines.append(f"{'  minus the paper, 95% by person':32s} " + " ".join(f"{c:>24s}" for c in cells))
    return "\n".join(lines)
