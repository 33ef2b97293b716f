"""Pack a manifest dataset into parts small enough to send to a training machine, and join them there.

    python -m train.pack --data data/forge --out xfer/forge [--splits train val] [--val-limit 500]
                         [--quality 85 | --lossless] [--part-mib 60] [--max-parts N] [--seed 0] [--workers 2]
    python -m train.pack --join xfer/forge     # on the training machine: one manifest over the parts that arrived

A forge build is about 700 MB of JPEG crops and 8-bit masks; a machine reached through a link that takes 64 MiB at a
time (as this project's GPU machine is) needs it smaller and in pieces. Each part ``OUT/pNNN/`` is a dataset of its
own (``manifest.csv``, ``images/*.webp``, ``masks/*.png``) holding whole people, so a part that has arrived can be
trained on before the rest follow, and ``--by-person`` batches still find a person's real crop beside its forgeries.
``OUT/manifest.csv`` lists the rows of every part present (paths prefixed by the part), so ``OUT`` is a dataset root
for ``train.train --data OUT``; ``--join`` rewrites it after more parts arrive.

What is lost, and what is not:

* Images are re-encoded as WebP (quality 85 by default; ``--lossless`` keeps them exact). The run prints the mean
  absolute change a pixel this caused (about 1.6 grey levels at 85 on forge crops). Reals and fakes are re-encoded
  alike, so the change is no label cue; but it is a change, so evaluate on the original build.
* Masks are stored as 1 bit, after the binarisation at 128 that the trainer and ``train.evaluate`` apply to every
  mask they read: nothing they use is lost (``train.diagnose visibility``, which reads the blend's soft alpha, is
  not meant for a packed copy).
* People are shuffled (seeded) before they are dealt into parts, so each part, and any prefix of the parts, is a
  random sample of the people. The validation rows (``--val-limit`` of them, whole people) go into the first part.
  A person whose crops alone exceed ``--part-mib`` gets a part of their own, over the limit.
* Every column of the manifest is kept (``prepare_ffpp``'s ``video`` too, for video-level evaluation).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .data import read_manifest

HEADER_BYTES = 256  # a part's manifest header, at most (the manifest's columns, e.g. prepare_ffpp's "video" too)


def encode_image(path: Path, quality: int | None) -> tuple[bytes, float]:
    """WebP bytes of an image (lossless when ``quality`` is None) and the mean absolute change a pixel it caused."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    ok, buf = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 101 if quality is None else int(quality)])
    if not ok:
        raise OSError(f"cannot encode {path} as WebP")
    back = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return buf.tobytes(), float(np.abs(back.astype(np.int16) - bgr.astype(np.int16)).mean())


def encode_mask(path: Path) -> bytes:
    """A mask as a 1-bit PNG of ``mask >= 128`` (what the trainer keeps of it)."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OSError(f"cannot read {path}")
    out = io.BytesIO()
    Image.fromarray(mask >= 128).save(out, format="PNG", optimize=True)
    return out.getvalue()


def _encode_person(job: tuple[Path, list[dict], int | None]) -> list[dict]:
    """A person's rows encoded: each with its new manifest row (paths inside a part), bytes and the change."""
    root, rows, quality = job
    packed = []
    for r in rows:
        image, change = encode_image(root / r["image"], quality)
        mask = encode_mask(root / r["mask"]) if r["mask"] else None
        new = dict(r, image=f"images/{Path(r['image']).stem}.webp",
                   mask=f"masks/{Path(r['mask']).stem}.png" if r["mask"] else "")
        line = len(",".join(str(v) for v in new.values())) + 4  # its manifest line, quotes allowed for
        packed.append({"row": new, "image": image, "mask": mask, "change": change,
                       "bytes": len(image) + len(mask or b"") + line})
    return packed


def people_in_order(rows: list[dict], splits, val_limit: int | None, seed: int) -> list[list[dict]]:
    """Rows grouped by person, the groups in a seeded random order: the kept validation people first."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["split"] in splits:
            groups[(r["split"], r["person"])].append(r)
    keys = sorted(groups)
    order = [keys[i] for i in rng.permutation(len(keys))]
    val = [k for k in order if k[0] == "val"]
    if val_limit is not None:
        kept, n = [], 0
        for k in val:
            if n >= val_limit:
                break
            kept.append(k)
            n += len(groups[k])
        val = kept
    return [groups[k] for k in val] + [groups[k] for k in order if k[0] != "val"]


def _part_dir(out: Path, index: int) -> Path:
    return out / f"p{index:03d}"


def _write_manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def join(out) -> list[dict]:
    """Write ``out/manifest.csv`` over every part present; returns its rows."""
    out = Path(out)
    rows = []
    for part in sorted(p for p in out.glob("p[0-9][0-9][0-9]") if (p / "manifest.csv").is_file()):
        for r in read_manifest(part):
            r = dict(r)
            r["image"] = f"{part.name}/{r['image']}"
            r["mask"] = f"{part.name}/{r['mask']}" if r["mask"] else ""
            rows.append(r)
    if not rows:
        raise SystemExit(f"{out} holds no parts (pNNN/manifest.csv)")
    _write_manifest(out / "manifest.csv", rows)
    return rows


def pack(data, out, splits=("train", "val"), val_limit: int | None = None, quality: int | None = 85,
         part_mib: float = 60.0, max_parts: int | None = None, seed: int = 0, workers: int = 2) -> dict:
    """Pack ``data``'s rows of ``splits`` into parts of at most ``part_mib`` MiB under ``out``. Returns a summary."""
    data, out = Path(data), Path(out)
    rows = read_manifest(data)
    missing = sorted(set(splits) - {r["split"] for r in rows})
    if missing:
        raise SystemExit(f"{data / 'manifest.csv'} has no rows in split(s) {', '.join(missing)}")
    groups = people_in_order(rows, set(splits), val_limit, seed)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: pack into a new folder")
    limit = int(part_mib * 2**20) - HEADER_BYTES
    parts: list[dict] = []
    changes: list[float] = []
    left_out = 0

    def new_part():
        d = _part_dir(out, len(parts))
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir()
        parts.append({"dir": d, "rows": [], "bytes": 0})

    jobs = ((data, g, quality) for g in groups)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for packed in pool.map(_encode_person, jobs, chunksize=8):
            size = sum(p["bytes"] for p in packed)
            if not parts or parts[-1]["bytes"] + size > limit:
                if max_parts is not None and len(parts) >= max_parts:
                    left_out += len(packed)
                    continue
                new_part()
            part = parts[-1]
            for p in packed:
                r = p["row"]
                (part["dir"] / r["image"]).write_bytes(p["image"])
                if p["mask"] is not None:
                    (part["dir"] / r["mask"]).write_bytes(p["mask"])
                part["rows"].append(r)
                changes.append(p["change"])
            part["bytes"] += size
    for part in parts:
        _write_manifest(part["dir"] / "manifest.csv", part["rows"])
    joined = join(out) if parts else []
    return {
        "parts": [{"dir": str(p["dir"]), "rows": len(p["rows"]), "mib": (p["bytes"] + HEADER_BYTES) / 2**20}
                  for p in parts],
        "rows": len(joined),
        "by_split": {s: sum(r["split"] == s for r in joined) for s in splits},
        "left_out": left_out,
        "mean_change": float(np.mean(changes)) if changes else 0.0,
        "max_change": float(np.max(changes)) if changes else 0.0,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="a dataset root with manifest.csv (e.g. a train.build_dataset output)")
    ap.add_argument("--out", help="a new folder for the parts")
    ap.add_argument("--join", metavar="OUT", help="rewrite OUT/manifest.csv over the parts present, and stop")
    ap.add_argument("--splits", nargs="+", default=["train", "val"])
    ap.add_argument("--val-limit", type=int, default=None, help="keep about this many validation rows (whole people)")
    ap.add_argument("--quality", type=int, default=85, help="WebP quality 1-100 (default 85)")
    ap.add_argument("--lossless", action="store_true", help="lossless WebP: the images stay exact (larger)")
    ap.add_argument("--part-mib", type=float, default=60.0, help="most MiB a part takes (default 60)")
    ap.add_argument("--max-parts", type=int, default=None, help="stop after this many parts (the rest is counted)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the order people are dealt into parts")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if args.join:
        rows = join(args.join)
        print(f"{Path(args.join) / 'manifest.csv'}: {len(rows)} rows")
        return 0
    if not args.data or not args.out:
        ap.error("--data and --out are required (or --join OUT)")
    if not 1 <= args.quality <= 100:
        ap.error("--quality must be 1-100")
    s = pack(args.data, args.out, args.splits, args.val_limit, None if args.lossless else args.quality,
             args.part_mib, args.max_parts, args.seed, args.workers)
    for p in s["parts"]:
        print(f"{p['dir']}: {p['rows']} rows, {p['mib']:.1f} MiB")
    print(f"{s['rows']} rows packed ({', '.join(f'{k} {v}' for k, v in s['by_split'].items())}), "
          f"{s['left_out']} left out; WebP changed a pixel by {s['mean_change']:.2f} grey levels on average "
          f"(at most {s['max_change']:.2f} in one image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
