"""What the analyses share: per-family AUCs against all reals, and how a table prints one."""

from __future__ import annotations

import numpy as np

from mtl.constants import FAMILIES
from train import metrics as M


def family_aucs(s: dict, fake_sel: np.ndarray | None = None) -> dict:
    """AUC of all fakes (or those in ``fake_sel``) and of each family's, each against all the reals."""
    fake = s["label"] == 0
    sel = fake if fake_sel is None else fake & fake_sel
    real = ~fake
    out = {}
    for name, fam in [("all", sel)] + [(f, sel & (s["family"] == f)) for f in FAMILIES]:
        keep = fam | real
        out[name] = M.roc_auc(fake[keep], s["p_fake"][keep]) if fam.any() and real.any() else float("nan")
    return out


def fmt(v) -> str:
    """An AUC as a table shows it; a blank for a missing one."""
    return "  -  " if v is None or not np.isfinite(v) else f"{v:.3f}"
