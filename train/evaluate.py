"""Evaluate checkpoints with the paper's metrics, overall and per manipulation family, in one table.

    python -m train.evaluate --data ROOT --split test --model SPEC [--model SPEC2 ...]
                             [--authors ENC.pt DEC.pt --authors-name NAME ...] [--json out.json] [--limit N]
                             [--scores scores.csv]     # every image's p_fake per model, for python -m train.compare
                             [--name NAME ...]         # one per --model: its column and row name
    python -m train.evaluate --images DIR_OR_FILES ... --model SPEC      # real images: false-positive rate
    python -m train.evaluate --pair --authors ENC.pt DEC.pt --authors-name NAME   # the authors' two test crops

What is measured (fake = the positive class, score = the model's calibrated ``p_fake``):

* **Acc**: accuracy at the model's own threshold (``p_fake > threshold`` is judged fake).
* **EER** (with the threshold where FPR = FNR) and **AUC**: threshold-free, from ``train.metrics``.
* **Seg. acc**: the paper's segmentation accuracy, per-image pixel accuracy of the decoded mask (binarised at 0.5)
  averaged over the images of the row, reals included (their true mask is empty; a face judged real decodes an
  empty-ish mask by design).
* **IoU**: mean per-image IoU of the manipulated region, on the row's fakes only.
* **TPR** (fakes caught) and **FPR** (reals flagged) at the model's threshold.
* Per family, a row holds that family's fakes against **all** reals of the split (so AUC/EER/Acc/Seg. acc compare
  the family with every real face; TPR and IoU concern the family alone).
* Video level (when the manifest has a ``video`` column): the mean of the frames' ``p_fake`` per video, as the paper
  does, judged against the model's threshold.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from mtl.allocator import keep_freed_memory
from mtl.constants import FAMILIES

from . import metrics as M
from .data import ManifestDataset, read_manifest

PAIR_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "samples" / "classnseg"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# --- data ----------------------------------------------------------------------------------------------------------
def _load_rgb(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        if rgb.size != (256, 256):
            rgb = rgb.resize((256, 256), Image.BILINEAR)
        return np.asarray(rgb)


class ManifestFrames(ManifestDataset):
    """The evaluation view of a manifest split: ``train.data.ManifestDataset``'s items (image, mask, label, method)
    plus the row's ``family`` name (its ``method`` text; "real" for reals) and ``video`` id ("" without one).

    The family is kept as text so that FaceForensics++ methods outside ``FAMILIES`` still get their own row.
    """

    def __init__(self, root, split: str, rows: list[dict] | None = None):
        super().__init__(root, split, augment=False, rows=rows)
        self.has_video = bool(self.rows) and "video" in self.rows[0]

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        r = self.rows[i]
        item["family"] = "real" if int(item["label"]) == 1 else (r.get("method") or "unknown")
        item["video"] = (r.get("video") or "") if self.has_video else ""
        return item


def open_split(root, split: str, limit: int | None = None, seed: int = 0) -> ManifestFrames:
    """A split of a manifest dataset; ``limit`` keeps a seeded random subset of that many rows (in manifest order)."""
    rows = read_manifest(root, split)
    if not rows:
        raise SystemExit(f"{Path(root) / 'manifest.csv'} has no rows with split == {split!r}")
    if limit is not None and limit < len(rows):
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), limit, replace=False))
        rows = [rows[i] for i in keep]
    return ManifestFrames(root, split, rows)


# --- running a model -----------------------------------------------------------------------------------------------
def _as_loader(data, batch_size: int):
    if isinstance(data, torch.utils.data.DataLoader):
        return data
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)


def collect(model, data, precision: str = "fp32", batch_size: int = 32) -> dict:
    """Run ``model.predict`` over a dataset (or loader) of dict items; per-sample numpy arrays.

    Keys: p_fake, is_fake, activations (N, 2), margin (the statistic the calibration maps: a_fake - a_real, or an
    ensemble's mean log-odds), label (1 = real), method (index or -1), family (names), video
    (ids, or None when the data has none), pixel_acc and iou (per image). Masks are scored batch by batch, never
    kept.
    """
    out = {k: [] for k in ("p_fake", "is_fake", "activations", "margin", "label", "method", "family", "video",
                           "pixel_acc", "iou")}
    for batch in _as_loader(data, batch_size):
        pred = model.predict(batch["image"], precision=precision)
        label = batch["label"].reshape(-1).long()
        method = batch.get("method", torch.full_like(label, -1)).reshape(-1).long()
        out["p_fake"].append(pred.p_fake.numpy())
        out["is_fake"].append(pred.is_fake.numpy())
        out["activations"].append(pred.activations.numpy())
        out["margin"].append((pred.margin if pred.margin is not None
                              else pred.activations[:, 0] - pred.activations[:, 1]).float().numpy())
        out["label"].append(label.numpy())
        out["method"].append(method.numpy())
        if "family" in batch:
            out["family"].extend(batch["family"])
        else:
            out["family"].extend("real" if int(y) == 1 else (FAMILIES[int(m)] if m >= 0 else "unknown")
                                 for y, m in zip(label, method))
        out["video"].extend(batch.get("video", [""] * len(label)))
        true_mask = batch["mask"].numpy()
        pred_mask = pred.mask.numpy()
        out["pixel_acc"].append(M.pixel_accuracy_per_image(true_mask, pred_mask))
        out["iou"].append(M.mask_iou_per_image(true_mask, pred_mask))
    res = {k: np.concatenate(v) if k not in ("family", "video") and v else np.asarray(v)
           for k, v in out.items()}
    if len(res["p_fake"]) == 0:
        raise ValueError("the dataset is empty")
    res["video"] = res["video"] if any(v for v in res["video"]) else None
    return res


def _nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def detection_metrics(label, p_fake, threshold: float) -> dict:
    """Acc, EER (+ its threshold), AUC, TPR, FPR for labels (1 = real) and scores p_fake."""
    y_fake = 1 - np.asarray(label).astype(np.int64)
    p = np.asarray(p_fake, dtype=np.float64)
    eer, eer_thr = M.equal_error_rate(y_fake, p)
    return {
        "acc": M.accuracy(y_fake, (p > threshold).astype(np.int64)),
        "eer": eer,
        "eer_threshold": eer_thr,
        "auc": M.roc_auc(y_fake, p),
        "tpr": M.tpr_at_threshold(y_fake, p, threshold),
        "fpr": M.fpr_at_threshold(y_fake, p, threshold),
        "n": int(len(p)),
        "n_real": int((y_fake == 0).sum()),
        "n_fake": int((y_fake == 1).sum()),
    }


def _row(s: dict, sel: np.ndarray, threshold: float) -> dict:
    row = detection_metrics(s["label"][sel], s["p_fake"][sel], threshold)
    fakes = sel & (s["label"] == 0)
    row["seg_acc"] = float(s["pixel_acc"][sel].mean()) if sel.any() else float("nan")
    row["iou"] = float(s["iou"][fakes].mean()) if fakes.any() else float("nan")
    return {k: _nan_to_none(v) for k, v in row.items()}


def _video_level(s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label, mean p_fake, family) per video, videos in first-seen order."""
    videos = s["video"]
    ids, first, inverse = np.unique(videos, return_index=True, return_inverse=True)
    order = np.argsort(first)
    p = np.bincount(inverse, weights=s["p_fake"]) / np.bincount(inverse)
    label = np.ones(len(ids), dtype=np.int64)
    np.minimum.at(label, inverse, s["label"])  # a video is real only when all its frames are (they should agree)
    family = s["family"][first]
    return label[order], p[order], family[order]


def summarize(samples: dict, threshold: float) -> dict:
    """Overall and per-family rows (and video-level rows when there are videos) from ``collect``'s arrays."""
    s = samples
    is_real = s["label"] == 1
    fams = sorted({f for f, y in zip(s["family"], s["label"]) if y == 0})
    result = {
        "threshold": threshold,
        "overall": _row(s, np.ones(len(is_real), bool), threshold),
        "families": {f: _row(s, is_real | (s["family"] == f), threshold) for f in fams},
    }
    if s.get("video") is not None:
        vl, vp, vf = _video_level(s)
        vreal = vl == 1
        result["video"] = {
            "overall": {k: _nan_to_none(v) for k, v in detection_metrics(vl, vp, threshold).items()},
            "families": {f: {k: _nan_to_none(v) for k, v in detection_metrics(vl[vreal | (vf == f)],
                                                                              vp[vreal | (vf == f)],
                                                                              threshold).items()}
                         for f in sorted(set(vf[~vreal]))},
        }
    return result


def evaluate(model, dataset_or_loader, precision: str = "fp32", batch_size: int = 32,
             keep_scores: bool = False) -> dict:
    """The paper's metrics for ``model`` on a dataset (or DataLoader) of dict items (image, mask, label, method;
    optional ``family`` and ``video`` strings).

    Returns {"model", "threshold", "overall": row, "families": {family: row}, ["video": {...}]}; a row holds acc,
    eer, eer_threshold, auc, tpr, fpr, seg_acc, iou, n, n_real, n_fake (None where undefined, e.g. AUC without
    reals). See the module docstring for what each means. With ``keep_scores`` it also holds "p_fake", the
    per-image scores in dataset order (for ``write_scores`` and paired comparisons, ``train.compare``).
    """
    samples = collect(model, dataset_or_loader, precision=precision, batch_size=batch_size)
    result = summarize(samples, float(model.threshold))
    if keep_scores:
        result["p_fake"] = samples["p_fake"]
    return {"model": getattr(model, "name", "model"), **result}


def write_scores(path, rows: list[dict], results: list[dict]) -> None:
    """One CSV line per image of the split: its manifest ``image``, ``person``, ``family`` ("real" for reals) and
    ``label`` (1 = real), then each model's ``p_fake`` in a column named after the model (made unique). Two
    checkpoints scored on the same images can then be compared pairwise (``python -m train.compare``) without
    running them again."""
    import csv

    from .compare import unique_name

    names = []
    for r in results:
        names.append(unique_name(str(r["model"]), names))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "person", "family", "label", *names])
        for i, row in enumerate(rows):
            real = row.get("label") == "real"
            w.writerow([row.get("image", ""), row.get("person", ""),
                        "real" if real else (row.get("method") or "unknown"), 1 if real else 0,
                        *(f"{float(r['p_fake'][i]):.7g}" for r in results)])


# --- table ---------------------------------------------------------------------------------------------------------
COLUMNS = (("Acc", "acc", "%"), ("EER", "eer", "%"), ("AUC", "auc", "f"), ("Seg. acc", "seg_acc", "%"),
           ("IoU", "iou", "%"), ("TPR", "tpr", "%"), ("FPR", "fpr", "%"), ("n", "n", "d"))


def _fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    return {"%": f"{100 * v:.2f}", "f": f"{v:.4f}", "d": f"{int(v)}"}[kind]


def format_table(results: list[dict]) -> str:
    """Rows: model x family (then video-level rows); columns as in the paper, percentages for rates."""
    lines = []
    for r in results:
        rows = [("all", r["overall"])] + list(r["families"].items())
        if "video" in r:
            rows += [("all (video)", r["video"]["overall"])]
            rows += [(f"{f} (video)", row) for f, row in r["video"]["families"].items()]
        for fam, row in rows:
            lines.append([r["model"], fam] + [_fmt(row.get(key), kind) for _, key, kind in COLUMNS])
    header = ["Model", "Family"] + [c for c, _, _ in COLUMNS]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(l) for l in lines])


# --- the authors' test pair ----------------------------------------------------------------------------------------
def load_pair_image(path) -> tuple[np.ndarray, np.ndarray]:
    """One of the authors' 512x256 test images -> (256x256x3 uint8 face crop, 256x256 int64 mask, 1 = manipulated).

    The left half is the crop, the right half its mask (white = manipulated).
    """
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    if rgb.shape[:2] != (256, 512):
        raise ValueError(f"{path}: expected a 512x256 image (crop | mask), got {rgb.shape[1]}x{rgb.shape[0]}")
    return np.ascontiguousarray(rgb[:, :256]), (rgb[:, 256:].mean(axis=2) > 127).astype(np.int64)


def evaluate_pair(model, pair_dir=PAIR_DIR, precision: str = "fp32") -> list[dict]:
    """Per image of the authors' pair (real.jpg, fake.jpg): p_fake, verdict, activations, seg accuracy, IoU."""
    from mtl.preprocess import to_model_input

    rows = []
    for name, truth in (("real", "real"), ("fake", "fake")):
        crop, mask = load_pair_image(Path(pair_dir) / f"{name}.jpg")
        pred = model.predict(to_model_input(crop), precision=precision)
        pm = pred.mask.numpy()
        rows.append({
            "model": getattr(model, "name", "model"),
            "image": f"{name}.jpg",
            "truth": truth,
            "p_fake": float(pred.p_fake[0]),
            "verdict": "fake" if bool(pred.is_fake[0]) else "real",
            "correct": (bool(pred.is_fake[0]) == (truth == "fake")),
            "a_fake": float(pred.activations[0, 0]),
            "a_real": float(pred.activations[0, 1]),
            "seg_acc": float(M.pixel_accuracy_per_image(mask, pm[0])[0]),
            "iou": float(M.mask_iou_per_image(mask, pm[0])[0]),
            "mask_pixels": int(mask.sum()),
            "pred_mask_pixels": int((pm[0] > 0.5).sum()),
        })
    return rows


def format_pair_table(rows: list[dict]) -> str:
    header = ["Model", "Image", "Truth", "p_fake", "Verdict", "a_fake", "a_real", "Seg. acc", "IoU"]
    lines = [[r["model"], r["image"], r["truth"], f"{r['p_fake']:.4f}",
              r["verdict"] + ("" if r["correct"] else " (wrong)"),
              f"{r['a_fake']:.4f}", f"{r['a_real']:.4f}", f"{100 * r['seg_acc']:.2f}", f"{100 * r['iou']:.2f}"]
             for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    note = "IoU: the real image's true mask is empty, so its IoU is 1 when nothing is flagged, 0 otherwise."
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(l) for l in lines] + [note])


# --- plain real images ---------------------------------------------------------------------------------------------
def _image_files(specs) -> list[Path]:
    files = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
        elif p.is_file():
            files.append(p)
        else:
            raise SystemExit(f"--images: {spec} is neither a file nor a directory")
    return files


def evaluate_real_images(model, files, precision: str = "fp32", batch_size: int = 32) -> dict:
    """False-positive rate on images of real faces at the model's threshold.

    A 256x256 image is taken as a face crop as it is; any other image goes through the app's face detection
    (``mtl.pipeline.analyze_image``), every detected face counting once. Reports the fraction of faces judged fake,
    of images with at least one face judged fake, and the images where no face was found.
    """
    from PIL import Image

    from mtl.preprocess import to_model_input

    crops, faces_p, per_image, no_face = [], [], [], []
    crop_files = []
    for f in files:
        with Image.open(f) as im:
            size = im.size
        if size == (256, 256):
            crops.append(_load_rgb(f))
            crop_files.append(f)
            continue
        from mtl.pipeline import analyze_image

        res = analyze_image(str(f), model)
        if not res.faces:
            no_face.append(str(f))
            continue
        ps = [fr.p_fake for fr in res.faces]
        faces_p += ps
        per_image.append(any(fr.is_fake for fr in res.faces))
    for i in range(0, len(crops), batch_size):
        pred = model.predict(to_model_input(crops[i:i + batch_size]), precision=precision)
        faces_p += pred.p_fake.tolist()
        per_image += pred.is_fake.tolist()
    p = np.asarray(faces_p)
    return {
        "model": getattr(model, "name", "model"),
        "threshold": float(model.threshold),
        "images": len(files),
        "faces": int(len(p)),
        "fpr_faces": _nan_to_none(float(np.mean(p > model.threshold)) if len(p) else float("nan")),
        "fpr_images": _nan_to_none(float(np.mean(per_image)) if per_image else float("nan")),
        "images_without_face": len(no_face),
        "p_fake_mean": _nan_to_none(float(p.mean()) if len(p) else float("nan")),
        "p_fake_p95": _nan_to_none(float(np.percentile(p, 95)) if len(p) else float("nan")),
    }


VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}


def evaluate_real_videos(model, specs, every: int = 10) -> dict:
    """False-positive rate on frames of real videos at the model's threshold, through the app's video pipeline.

    Every ``every``-th frame is analysed (``mtl.pipeline.analyze_video``); a frame's score is its most suspicious
    face, frames without a face are left out and counted. Also the video-level verdicts (the mean of the frames'
    probabilities, as the paper does).
    """
    from mtl.pipeline import analyze_video

    files = []
    for spec in specs:
        p = Path(spec)
        files += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTS) if p.is_dir() else [p]
    per_video, frame_p = [], []
    for f in files:
        v = analyze_video(str(f), model, every=every, max_duration=None)
        ps = [fr.p_fake for fr in v.frames if fr.p_fake is not None]
        frame_p += ps
        per_video.append({"video": f.name, "frames": len(v.frames), "frames_with_face": len(ps),
                          "fpr_frames": float(np.mean(np.asarray(ps) > model.threshold)) if ps else None,
                          "p_fake": v.p_fake, "verdict": v.verdict,
                          "frame_p_fake": [float(x) for x in ps]})  # to study other thresholds later
    p = np.asarray(frame_p)
    judged = [v for v in per_video if v["p_fake"] is not None]
    return {
        "model": getattr(model, "name", "model"),
        "threshold": float(model.threshold),
        "videos": len(files),
        "every": every,
        "frames_with_face": int(len(p)),
        "fpr_frames": _nan_to_none(float(np.mean(p > model.threshold)) if len(p) else float("nan")),
        # frames of one clip are not independent: the interval resamples whole clips
        "fpr_frames_interval": [_nan_to_none(x) for x in M.clustered_rate_interval(
            [np.asarray(v["frame_p_fake"]) > model.threshold for v in per_video])],
        "fpr_videos": _nan_to_none(float(np.mean([v["p_fake"] > model.threshold for v in judged]))
                                   if judged else float("nan")),
        "p_fake_mean": _nan_to_none(float(p.mean()) if len(p) else float("nan")),
        "p_fake_p95": _nan_to_none(float(np.percentile(p, 95)) if len(p) else float("nan")),
        "per_video": per_video,
    }


# --- CLI -----------------------------------------------------------------------------------------------------------
def load_models(specs, authors, authors_names, device: str = "cpu", names=None) -> list:
    """The models of ``--model`` (named by ``names`` in order, else by their folder) and of ``--authors``."""
    from mtl import load_model
    from mtl.convert import convert_authors_checkpoint

    specs, names = specs or [], names or []
    if len(names) > len(specs):
        raise SystemExit(f"{len(names)} --name for {len(specs)} --model: give one name per model, in order")
    models = []
    for i, spec in enumerate(specs):
        m = load_model(None if spec == "default" else spec, device=device)
        folder = Path(spec.rstrip("/")).name if spec != "default" else (m.name or "default")
        m.name = names[i] if i < len(names) else folder
        models.append(m)
    names = list(authors_names or [])
    for i, (enc, dec) in enumerate(authors or []):
        name = names[i] if i < len(names) else f"authors-{Path(enc).stem}"
        models.append(convert_authors_checkpoint(enc, dec, name=name))
    if not models:
        m = load_model(None, device=device)
        m.name = "default"
        models.append(m)
    return models


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="dataset root holding manifest.csv")
    p.add_argument("--split", default="test")
    p.add_argument("--model", action="append", default=[], metavar="SPEC",
                   help="checkpoint dir, Hub id, or 'default' (repeatable); without any model, the shipped default")
    p.add_argument("--name", action="append", metavar="NAME",
                   help="display name (and --scores column) for each --model, in order (default: its folder's name)")
    p.add_argument("--authors", action="append", nargs=2, metavar=("ENC.pt", "DEC.pt"),
                   help="the authors' released encoder/decoder state dicts, converted on the fly (repeatable)")
    p.add_argument("--authors-name", action="append", metavar="NAME", help="display name for each --authors")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--scores", type=Path, metavar="CSV",
                   help="--data: also write every image's p_fake, one column per model (for python -m train.compare)")
    p.add_argument("--limit", type=int, help="evaluate a seeded random subset of N rows of the split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=("fp32", "auto", "bf16"),
                   help="the network's precision for --data, --images and --pair (default fp32); --videos runs the "
                        "app's own pipeline, which picks it as the app does (bf16 where the CPU has it)")
    p.add_argument("--images", nargs="+", metavar="DIR_OR_FILE", help="real images: report the false-positive rate")
    p.add_argument("--videos", nargs="+", metavar="DIR_OR_FILE",
                   help="real videos: false-positive rate on their frames (see --every)")
    p.add_argument("--every", type=int, default=10, help="--videos: analyse every k-th frame")
    p.add_argument("--pair", action="store_true", help="the authors' two 512x256 test images (crop | mask)")
    p.add_argument("--pair-dir", type=Path, default=PAIR_DIR)
    args = p.parse_args(argv)
    if args.data:  # batches of faces: each batch's buffers reused by the next (mtl/allocator.py)
        keep_freed_memory()

    modes = sum([args.data is not None, bool(args.images), bool(args.videos), args.pair])
    if modes != 1:
        p.error("give exactly one of --data ROOT, --images ..., --videos ..., --pair")
    if args.scores and args.data is None:
        p.error("--scores goes with --data")
    if args.videos and args.precision:
        p.error("--precision does not apply to --videos: their frames go through the app's own pipeline, as a user's "
                "would, in the precision the app picks")
    args.precision = args.precision or "fp32"
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    models = load_models(args.model, args.authors, args.authors_name, names=args.name)

    if args.pair:
        rows = [r for m in models for r in evaluate_pair(m, args.pair_dir, args.precision)]
        print(format_pair_table(rows))
        output = {"mode": "pair", "pair_dir": str(args.pair_dir), "rows": rows}
    elif args.videos:
        results = [evaluate_real_videos(m, args.videos, args.every) for m in models]
        for r in results:
            print(f"{r['model']}: {r['frames_with_face']} frames with a face in {r['videos']} real videos "
                  f"(every {r['every']}th frame); judged fake at threshold {r['threshold']:.4g}: "
                  f"{_fmt(r['fpr_frames'], '%')}% of frames, {_fmt(r['fpr_videos'], '%')}% of videos")
            lo, hi = r["fpr_frames_interval"]
            print(f"    frames judged fake, 95% interval resampling whole clips: {_fmt(lo, '%')}% to {_fmt(hi, '%')}%")
            for v in r["per_video"]:
                print(f"    {v['video']:<45} frames {v['frames_with_face']:>4}/{v['frames']:<4} "
                      f"FPR {_fmt(v['fpr_frames'], '%'):>6}%  video p_fake {_fmt(v['p_fake'], 'f'):>6}")
        output = {"mode": "videos", "inputs": [str(x) for x in args.videos], "results": results}
    elif args.images:
        files = _image_files(args.images)
        results = [evaluate_real_images(m, files, args.precision, args.batch_size) for m in models]
        for r in results:
            print(f"{r['model']}: {r['faces']} faces in {r['images']} images "
                  f"({r['images_without_face']} without a face); "
                  f"judged fake at threshold {r['threshold']:.4g}: {_fmt(r['fpr_faces'], '%')}% of faces, "
                  f"{_fmt(r['fpr_images'], '%')}% of images")
        output = {"mode": "images", "inputs": [str(x) for x in args.images], "results": results}
    else:
        data = open_split(args.data, args.split, args.limit, args.seed)
        results = []
        for m in models:
            r = evaluate(m, data, precision=args.precision, batch_size=args.batch_size, keep_scores=True)
            r["source"] = getattr(m, "source", None) or m.description
            results.append(r)
        if args.scores:
            write_scores(args.scores, data.rows, results)
            print(f"wrote {args.scores}")
        for r in results:
            r.pop("p_fake")
        print(f"{args.data} split={args.split}: {len(data)} images"
              + (f" (random subset of {args.limit}, seed {args.seed})" if args.limit else ""))
        print(format_table(results))
        output = {"mode": "dataset", "data": str(args.data), "split": args.split, "n": len(data),
                  "limit": args.limit, "seed": args.seed, "precision": args.precision, "results": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
