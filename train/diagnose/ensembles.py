"""``ensemble``: several checkpoints' standardized evidence averaged, beside each alone."""

from __future__ import annotations

import numpy as np

from mtl.constants import FAMILIES
from train.diagnose.common import family_aucs, fmt
from train.evaluate import ManifestFrames, collect


def evidence(s: dict) -> np.ndarray:
    """What a model's verdict rests on: the fake half's activation minus the real half's (``collect``'s output)."""
    a = s["activations"].astype(np.float64)
    return a[:, 0] - a[:, 1]


def ensemble(models, names, data: ManifestFrames, reference: ManifestFrames, precision: str = "fp32") -> dict:
    """Per-family AUC of each model and of the average of their standardized evidence (see the module's text)."""
    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least two models, got {len(models)}")
    rows, standardized = [], []
    for model, name in zip(models, names):
        s = collect(model, data, precision=precision)
        ref = evidence(collect(model, reference, precision=precision))
        z = (evidence(s) - ref.mean()) / max(float(ref.std()), 1e-12)
        standardized.append(z)
        rows.append({"model": name, "auc": family_aucs(dict(s, p_fake=z))})
    average = np.mean(standardized, axis=0)
    rows.append({"model": f"average of the {len(models)}", "auc": family_aucs(dict(s, p_fake=average))})
    return {"crops": len(data), "reference_crops": len(reference), "rows": rows}


def format_ensemble(e: dict) -> str:
    head = f"{'model':40s} " + " ".join(f"{c:>9s}" for c in ["all", *FAMILIES])
    lines = [f"AUC on {e['crops']} crops; evidence standardized on {e['reference_crops']} reference crops", head,
             "-" * len(head)]
    lines += [f"{r['model'][-40:]:40s} " + " ".join(f"{fmt(r['auc'][c]):>9s}" for c in ["all", *FAMILIES])
              for r in e["rows"]]
    return "\n".join(lines)
