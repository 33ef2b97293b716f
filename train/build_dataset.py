"""Build a training set of real and forged face crops from a folder of real face photos.

    python -m train.build_dataset --faces DIR --out OUT [--limit N] [--workers W] [--seed S]
                                  [--fakes-per-real K] [--val-frac F] [--test-frac F] [--split-seed S]

Writes ``OUT/images/*.jpg`` (256x256 crops), ``OUT/masks/*.png`` (8-bit blend alpha; binarise at 0.5) and
``OUT/manifest.csv`` with columns ``image,mask,label,method,person,split``.

Why it is built this way:

* The face is detected once on the *real* photo, and the real crop and every forged crop use that same
  ``crop_face`` square, the one the app computes at inference. Framing can never tell real from fake.
* Real and forged frames go through the same JPEG re-compression (a random quality from the same range) before the
  crop and its resize, so compression is never the label either.
* Splits are by person, and a forgery's donor face always comes from another person of the same split, so no identity
  crosses from train to test.
* Everything is drawn from ``numpy`` generators seeded by ``(seed, photo index, variant)``: the same seed rebuilds
  the same files whatever the number of workers.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# mediapipe logs through glog/absl; keep the progress bar readable (must be set before mediapipe loads)
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mtl.constants import FAMILIES  # noqa: E402

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MANIFEST_COLUMNS = ["image", "mask", "label", "method", "person", "split"]
# families whose forgery takes a second person's face
DONOR_FAMILIES = {"faceswap", "deepfake"}
# the re-compression every sample (real or fake) goes through, as JPEG quality
RECOMPRESS_QUALITY = (70, 95)
SAVE_QUALITY = 95


# --- finding photos and splitting them ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    path: str
    person: str


SMALL_FOLDER = 5  # a flat folder with at most this many photos is taken to be one person's (webmorph's lisa, zoom)


def person_of(path: Path, root: Path, rule: str = "auto", folder_size: int | None = None) -> str:
    """Who is in the photo.

    ``auto``: the folder when the file name starts with it (LFW ``Name/Name_0001.jpg``, webmorph ``lisa/lisa1.jpg``)
    or when the folder holds only a few photos; otherwise the file stem up to its first underscore (flat sets such as
    webmorph's ``neutral_front/001_03.jpg`` and ``smiling_front/001_08.jpg``: person ``001`` in both). ``folder`` and
    ``stem`` force one rule; use ``folder`` for a tree of person folders with arbitrary file names.
    """
    folder = path.parent.name if path.parent != root else ""
    if rule == "folder" and folder:
        return folder
    if rule == "stem" or not folder:
        return path.stem.split("_")[0] or path.stem
    if path.stem.lower().startswith(folder.lower()) or (folder_size is not None and folder_size <= SMALL_FOLDER):
        return folder
    return path.stem.split("_")[0] or path.stem


def scan_photos(root: str | Path, rule: str = "auto") -> list[Photo]:
    """Every image under ``root`` (recursively), sorted by path."""
    root = Path(root)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    sizes = Counter(p.parent for p in paths)
    return [Photo(str(p), person_of(p, root, rule, sizes[p.parent])) for p in paths]


def split_people(photos: list[Photo], seed: int, val_frac: float, test_frac: float) -> dict[str, str]:
    """Assign each person to train/val/test so that about ``*_frac`` of the *photos* land in val and test.

    People are shuffled with the seed and dealt out greedily; a person's photos never straddle two splits.
    """
    counts = Counter(p.person for p in photos)
    people = sorted(counts)
    order = np.random.default_rng([seed, 1]).permutation(len(people))
    total = len(photos)
    want = {"test": test_frac * total, "val": val_frac * total}
    got = {"test": 0, "val": 0}
    split = {}
    for i in order:
        person = people[i]
        target = next((s for s in ("test", "val") if got[s] + counts[person] / 2 <= want[s]), "train")
        split[person] = target
        if target != "train":
            got[target] += counts[person]
    return split


# --- one photo -> samples ----------------------------------------------------------------------------------------


@dataclass
class Sample:
    image: np.ndarray  # 256x256x3 uint8 RGB (mtl.constants.FACE_SIZE)
    mask: np.ndarray | None  # 256x256 float32 blend alpha, None for a real crop
    family: str | None  # None for real


@dataclass
class Variant:
    family: str | None  # None = the real crop
    donors: tuple[str, ...] = ()  # other people's photos to take a face from (DONOR_FAMILIES), best-posed one used


@dataclass
class Outcome:
    samples: list[Sample | None] = field(default_factory=list)  # aligned with the variants; None = forge failed
    skipped: str | None = None  # why the whole photo was skipped


def read_rgb(path: str) -> np.ndarray | None:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def recompress(rgb: np.ndarray, rng: np.random.Generator, quality=RECOMPRESS_QUALITY) -> np.ndarray:
    """One JPEG round trip at a random quality: the same step for real and forged frames."""
    q = int(rng.integers(quality[0], quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main_face(rgb: np.ndarray):
    """The photo's subject: the largest detected face (LFW photos often show bystanders), with its landmarks."""
    from mtl.faces import detect_faces, face_landmarks, landmarks_in_box

    boxes = detect_faces(rgb)
    if not boxes:
        return None, None
    box = max(boxes, key=lambda b: b.width * b.height)
    return box, landmarks_in_box(face_landmarks(rgb), box)


DONOR_CANDIDATES = 4  # donors offered per forgery; the first that faces like the target is taken
POSE_TOLERANCE = 0.12  # allowed difference in head turn (blend.yaw units, mirroring allowed)
POSE_LIMIT = 0.25  # beyond this a deepfake keeps the target's own face rather than smear a donor's


def pick_donor(paths: tuple[str, ...], landmarks: np.ndarray):
    """The first donor photo whose face is turned like the target's (or mirrored so), else the closest one.

    A swap between a frontal face and a turned one smears the features; FaceForensics++ pairs were chosen for
    similar faces too. Returns (photo, landmarks, pose gap), photo None when no candidate has a face.
    """
    from mtl.faces import face_landmarks
    from mtl.forge.blend import yaw

    target = yaw(landmarks)
    best, best_gap = (None, None), float("inf")
    for path in paths:
        rgb = read_rgb(path)
        faces = face_landmarks(rgb) if rgb is not None else []
        if not faces:
            continue
        d = yaw(faces[0])
        gap = min(abs(target - d), abs(target + d))
        if gap < best_gap:
            best, best_gap = (rgb, faces[0]), gap
        if gap <= POSE_TOLERANCE:
            break
    return best[0], best[1], best_gap


def make_samples(path: str, variants: list[Variant], seed: int, index: int, ks: list[int] | None = None) -> Outcome:
    """The real crop and forged crops of one photo, all framed by the detector box found on the real photo.

    Variant ``k`` draws from ``default_rng([seed, index, k])`` (``ks`` gives the k of each variant when only some
    are wanted), so any one sample can be remade on its own.
    """
    from mtl.faces import crop_face, crop_square
    from mtl.forge import forge

    rgb = read_rgb(path)
    if rgb is None:
        return Outcome(skipped="unreadable")
    box, landmarks = main_face(rgb)
    if box is None:
        return Outcome(skipped="no face")
    if landmarks is None:
        return Outcome(skipped="no landmarks")
    out = Outcome()
    for k, v in zip(ks if ks is not None else range(len(variants)), variants):
        rng = np.random.default_rng([seed, index, k])
        if v.family is None:
            crop = crop_face(recompress(rgb, rng), box)
            out.samples.append(Sample(crop.image, None, None))
            continue
        donor, donor_lm = None, None
        if v.family in DONOR_FAMILIES:
            donor, donor_lm, gap = pick_donor(v.donors, landmarks)
            if v.family == "deepfake" and gap > POSE_LIMIT:
                donor, donor_lm = None, None
        try:
            fake = forge(rgb, v.family, rng, donor=donor, landmarks=landmarks, donor_landmarks=donor_lm)
        except ValueError:
            out.samples.append(None)
            continue
        crop = crop_face(recompress(fake.image, rng), box)
        mask = crop_square(fake.mask, crop.square, crop.size)
        out.samples.append(Sample(crop.image, mask, v.family) if mask.max() >= 0.5 else None)
    return out


# --- the job a worker runs ---------------------------------------------------------------------------------------


@dataclass
class Job:
    index: int
    photo: Photo
    split: str
    variants: list[Variant]
    seed: int
    out: str


def _init_worker():
    cv2.setNumThreads(1)  # one process per core already


def run_job(job: Job) -> tuple[list[dict], Outcome]:
    """Make and write one photo's samples; returns their manifest rows."""
    outcome = make_samples(job.photo.path, job.variants, job.seed, job.index)
    rows = []
    for k, (v, s) in enumerate(zip(job.variants, outcome.samples)):
        if s is None:
            continue
        stem = f"{job.index:06d}_{k}_{v.family or 'real'}"
        image_rel = f"images/{stem}.jpg"
        cv2.imwrite(os.path.join(job.out, image_rel), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, SAVE_QUALITY])
        mask_rel = ""
        if s.mask is not None:
            mask_rel = f"masks/{stem}.png"
            cv2.imwrite(os.path.join(job.out, mask_rel), np.rint(s.mask * 255).astype(np.uint8))
        rows.append(dict(image=image_rel, mask=mask_rel, label="real" if v.family is None else "fake",
                         method=v.family or "", person=job.photo.person, split=job.split))
    outcome.samples = [s is not None for s in outcome.samples]  # do not ship pixels back to the parent
    return rows, outcome


def plan_jobs(photos: list[Photo], split: dict[str, str], fakes_per_real: int, seed: int, out: str) -> list[Job]:
    """Families cycle over all fakes (balanced); donors are drawn from other people of the same split."""
    rng = np.random.default_rng([seed, 2])
    by_split: dict[str, list[Photo]] = {}
    for p in photos:
        by_split.setdefault(split[p.person], []).append(p)
    jobs, n_fake = [], 0
    for i, photo in enumerate(photos):
        pool = by_split[split[photo.person]]
        variants = [Variant(None)]
        for _ in range(fakes_per_real):
            family = FAMILIES[n_fake % len(FAMILIES)]
            n_fake += 1
            donors: list[str] = []
            if family in DONOR_FAMILIES:
                # other people of the same split; a split of one person falls back to the mirrored face
                for _try in range(4 * DONOR_CANDIDATES):
                    cand = pool[int(rng.integers(len(pool)))]
                    if cand.person != photo.person and cand.path not in donors:
                        donors.append(cand.path)
                        if len(donors) == DONOR_CANDIDATES:
                            break
            variants.append(Variant(family, tuple(donors)))
        jobs.append(Job(i, photo, split[photo.person], variants, seed, out))
    return jobs


def select_photos(faces: str, limit: int | None, seed: int, val_frac: float, test_frac: float,
                  person_rule: str = "auto", split_seed: int = 0) -> tuple[list[Photo], dict[str, str]]:
    """The photos a build uses, in build order, and each person's split.

    The split has its own seed, so that datasets drawn with different forgery seeds (a training set and a
    validation set made on the fly, say) still agree on who is in which split.
    """
    photos = scan_photos(faces, person_rule)
    if not photos:
        raise SystemExit(f"no images found under {faces}")
    # shuffle before limiting so a small build samples many people, not the alphabet's first few
    order = np.random.default_rng([seed, 0]).permutation(len(photos))
    photos = [photos[i] for i in order[: limit or len(photos)]]
    return photos, split_people(photos, split_seed, val_frac, test_frac)


def build(faces: str, out: str, limit: int | None = None, workers: int = 2, seed: int = 0, fakes_per_real: int = 1,
          val_frac: float = 0.1, test_frac: float = 0.1, person_rule: str = "auto", progress: bool = True,
          split_seed: int = 0) -> dict:
    """Build the dataset; returns the summary (also printed by the CLI)."""
    from tqdm import tqdm

    photos, split = select_photos(faces, limit, seed, val_frac, test_frac, person_rule, split_seed)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "masks"), exist_ok=True)
    jobs = plan_jobs(photos, split, fakes_per_real, seed, out)

    counts: Counter = Counter()
    skipped: Counter = Counter()
    start = time.perf_counter()
    with open(os.path.join(out, "manifest.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        if workers > 1:
            import multiprocessing as mp

            # forkserver, not fork: a parent that has used OpenCV (or mediapipe) has thread pools that do not survive
            # a fork, and a forked worker then hangs on its first resize
            ctx = mp.get_context("forkserver")
            # its heavy imports loaded once by the server, not per worker; not this module itself: under ``python -m
            # train.build_dataset`` each worker runs it as the main module, and finding it imported already, warns
            ctx.set_forkserver_preload(["numpy", "cv2"])
            pool = ctx.Pool(workers, initializer=_init_worker)
            results = pool.imap(run_job, jobs, chunksize=4)
        else:
            pool, results = None, map(run_job, jobs)
        try:
            for rows, outcome in tqdm(results, total=len(jobs), desc="faces", unit="photo", disable=not progress,
                                      file=sys.stderr):
                if outcome.skipped:
                    skipped[outcome.skipped] += 1
                skipped["forge failed"] += sum(1 for ok in outcome.samples if not ok)
                for row in rows:
                    writer.writerow(row)
                    counts[(row["split"], row["method"] or "real")] += 1
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    elapsed = time.perf_counter() - start
    n = sum(counts.values())
    summary = dict(photos=len(photos), samples=n, seconds=round(elapsed, 1),
                   samples_per_second=round(n / max(elapsed, 1e-9), 1),
                   skipped={k: v for k, v in skipped.items() if v},
                   counts={f"{s}/{m}": c for (s, m), c in sorted(counts.items())},
                   people={s: sum(1 for v in split.values() if v == s) for s in ("train", "val", "test")})
    return summary


def print_summary(summary: dict) -> None:
    print(f"{summary['samples']} samples from {summary['photos']} photos in {summary['seconds']} s "
          f"({summary['samples_per_second']} samples/s)")
    print("people per split: " + ", ".join(f"{k} {v}" for k, v in summary["people"].items()))
    splits = sorted({k.split("/")[0] for k in summary["counts"]}, key=["train", "val", "test"].index)
    for s in splits:
        parts = [f"{m} {summary['counts'].get(f'{s}/{m}', 0)}" for m in ("real",) + FAMILIES]
        print(f"  {s:5s}: " + ", ".join(parts))
    print("skipped: " + (", ".join(f"{k} {v}" for k, v in summary["skipped"].items()) or "none"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--faces", required=True, help="folder of real face photos (searched recursively)")
    ap.add_argument("--out", required=True, help="output folder (images/, masks/, manifest.csv)")
    ap.add_argument("--limit", type=int, default=None, help="use at most N photos (a seeded random subset)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0, help="seeds the photo subset, forgeries, donors, JPEG qualities")
    ap.add_argument("--split-seed", type=int, default=0, help="seeds who goes to train/val/test")
    ap.add_argument("--fakes-per-real", type=int, default=1, help="forged crops per real crop (families cycle)")
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--test-frac", type=float, default=0.1)
    ap.add_argument("--person-from", choices=["auto", "folder", "stem"], default="auto",
                    help="who is in a photo: its folder, its file stem, or auto (folder if the file name starts "
                         "with it, else the stem)")
    a = ap.parse_args(argv)
    summary = build(a.faces, a.out, a.limit, a.workers, a.seed, a.fakes_per_real, a.val_frac, a.test_frac,
                    a.person_from, split_seed=a.split_seed)
    print_summary(summary)


if __name__ == "__main__":
    main()
