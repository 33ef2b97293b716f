"""``scale``: the paper's read-out with each face resized before the encoder (fewer or more pixels a side), beside
the same read-out at the size the network was trained on."""

from __future__ import annotations

import numpy as np

from mtl.constants import FACE_SIZE
from train.diagnose.readout import PAPER_READOUT, against_the_paper, cell_activations
from train.evaluate import ManifestFrames

SCALES = (0.75, 1.25, 1.5)  # of FACE_SIZE


def scale_label(size: int) -> str:
    return PAPER_READOUT if size == FACE_SIZE else f"resized to {size}x{size}"


def at_scales(model, data: ManifestFrames, scales=SCALES, n_boot: int = 1000) -> dict:
    """Per-family AUC of the paper's read-out at ``FACE_SIZE`` and at each of ``scales`` times it, and each
    resized read-out's difference from the original with a 95% interval resampling people.

    If small forgeries (a self-blended mouth, the eyes) are missed because the encoder, at stride 16, gives them too
    few pixels, a face enlarged before the encoder catches more of them even without training at that size; a
    face shrunk shows how much the evidence depends on the finest detail.
    """
    sizes = [FACE_SIZE]  # then each scale's size, a multiple of the stride (16), once
    for s in scales:
        size = max(int(round(FACE_SIZE * s / 16)) * 16, 32)
        sizes += [size] if size not in sizes else []
    scores, base = {}, None
    for size in sizes:
        c = cell_activations(model, data, size=size)
        if base is None:
            base = c  # labels, families and mask shares (the same at every size)
        scores[scale_label(size)] = c["fake"].mean(1) - c["real"].mean(1)
    people = np.array([r.get("person", "") for r in data.rows])
    table = against_the_paper(scores, base["label"] == 0, base["family"], base["area"], people, n_boot)
    return {"crops": len(data), "sizes": sizes, **table}
