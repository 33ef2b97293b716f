"""Where a detector's evidence runs out: diagnostics beside ``train.evaluate``'s scores.

``degradations``: the split scored again after each of the degradations that training imitates (lost resolution,
blur, JPEG, an H.264 round trip, the whole training augmentation as run without ``--h264``) and after motion smears
(``train.data.motion_blur``: 5 or 9 pixels in a direction drawn per crop, over the whole crop or only the mouth or
the eyes, as a moving head or a talking face leaves in a video frame). Per family AUC, and the share of real faces
judged fake at the model's own threshold. If the training augmentation erased the evidence, or if video coding or
motion alone made real faces look fake, it shows here.

``visibility``: each forgery of a ``train.build_dataset`` split is paired with the real crop of the same photo, and
scored by how much it changed the pixels (mean absolute difference inside its mask, in grey levels). AUC per family
within bins of that visibility tells whether a family is hard because its forgeries are invisible or because the
detector misses visible ones. The same AUCs by the share of the crop the mask covers tell small forgeries (a mouth,
the eyes) from whole-face ones.

``selfblend``: which ingredient of a self-blend the detector sees. Self-blends are made afresh on the split's real
crops with one ingredient at a time (a colour change, a frequency change, a slight shift; ``mtl.forge.selfblend``),
all three, and all three on a part of the face only; each variant's AUC against the same real crops. Both sides get
one more JPEG round trip, as ``train.build_dataset`` gives every crop.

``probe``: whether the encoder holds evidence that the paper's read-out leaves unused. Logistic regressions (linear
probes) are fitted, on ``--fit-split`` (default train), to each face's channel statistics (mean, standard deviation
and maximum over the grid) of the latent and, for a timm encoder, of every backbone stage; then scored on ``--split``
beside the paper's read-out. A family that a probe catches far better than the read-out is one the network sees
but does not report; one that no probe catches is one the encoder does not see.

``ensemble``: several checkpoints scored together. Each model's evidence (its activation difference, a_fake -
a_real) is put in units of its spread over a reference split (``--reference-split``, default val), so that models with
different activation scales weigh alike, and the average is scored beside each model alone. If checkpoints trained
differently make different mistakes, their average is better than the best of them.

``readout``: whether the paper's read-out dilutes small forgeries. Each half is scored by its mean |activation| over
the whole latent grid, so a forgery of a tenth of the face moves it a tenth as much; scored instead over the fake
half's strongest cells, beside the paper's read-out, per family and for self-blends under a tenth of the crop, with
the difference from the paper's and a 95% interval resampling people (the exact network, fp32; no mirror).

``scale``: whether the encoder lacks pixels. Each face is resized before the encoder (by default to 0.75, 1.25 and
1.5 times the size the network was trained on, bicubic) and scored by the paper's read-out over the grid that size
gives, beside the original, per family and for self-blends under a tenth of the crop, with the difference and a 95%
interval resampling people (the exact network, fp32). A family that gains from an enlarged face is one whose
evidence is too small for the encoder's stride; one that loses much from a shrunk face rests on the finest detail.

``tradeoff``: how many real video frames a model flags when it catches a given share of a split's fakes. Two
checkpoints calibrated to different thresholds cannot be compared by the false alarms each raises at its own
threshold (a stricter threshold lowers both the alarms and the detections); at matched detection rates they can.

    python -m train.diagnose degradations --data data/forge-v1 --split val --limit 1200 \
        --model checkpoints/regnetx-forge
    python -m train.diagnose visibility --data data/forge-v1 --split test --model checkpoints/regnetx-forge
    python -m train.diagnose selfblend --data data/forge-v1 --split test --limit 900 --model checkpoints/regnetx-forge
    python -m train.diagnose tradeoff --data data/forge-v1 --split test --model checkpoints/regnetx-forge \
        --videos ../shared/data/videos --every 10
    python -m train.diagnose ensemble --data data/forge-v1 --split test --model checkpoints/regnetx-forge \
        --model checkpoints/classnseg-forge
    python -m train.diagnose readout --data data/forge-v2 --split val --model checkpoints/lite0-forge
    python -m train.diagnose scale --data data/forge-v2 --split test --model checkpoints/lite0-forge
    python -m train.diagnose probe --data data/forge-v2 --split test --fit-limit 3600 --model checkpoints/lite0-forge

One module per analysis (``degradation``, ``pixel_change`` for visibility, ``selfblend``, ``video_alarms`` for the
trade-off, ``ensembles``, ``readout``, ``scale``, ``probe``), each with the function that prints its table; ``cli``
parses the command line; what they share is in ``common``.
"""

from train.diagnose.common import family_aucs
from train.diagnose.degradation import DEGRADATIONS, DegradedFrames, degradations
from train.diagnose.ensembles import ensemble, evidence
from train.diagnose.probe import fit_logistic, pooled_features, probes
from train.diagnose.readout import PAPER_READOUT, against_the_paper, cell_activations, readout_scores, readouts
from train.diagnose.scale import SCALES, at_scales
from train.diagnose.selfblend import SELFBLEND_VARIANTS, selfblend_ingredients
from train.diagnose.video_alarms import DEFAULT_TPRS, matched_false_alarms, tradeoff
from train.diagnose.pixel_change import by_visibility, format_visibility, mask_area, real_twins, visibility
from train.diagnose.cli import main

__all__ = [
    "family_aucs", "DEGRADATIONS", "DegradedFrames", "degradations", "ensemble", "evidence", "fit_logistic",
    "pooled_features", "probes", "PAPER_READOUT", "against_the_paper", "cell_activations", "readout_scores",
    "readouts", "SCALES", "at_scales", "SELFBLEND_VARIANTS", "selfblend_ingredients", "DEFAULT_TPRS",
    "matched_false_alarms", "tradeoff", "by_visibility", "format_visibility", "mask_area", "real_twins",
    "visibility", "main",
]
