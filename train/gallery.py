"""A contact sheet of forgeries, for people to judge their realism.

    python -m train.gallery --faces DIR --out sheet.png [--n 4] [--seed S]

Each row is one real photo: its real crop, then for every family the forged crop | its mask | the mask over the crop
(red). The crops are made exactly as ``train.build_dataset`` makes them.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from mtl.constants import FACE_SIZE, FAMILIES
from train.build_dataset import DONOR_CANDIDATES, DONOR_FAMILIES, Variant, make_samples, scan_photos

PAD = 4
HEADER = 28


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The crop with manipulated pixels tinted red and the 0.5 contour drawn."""
    a = (mask[..., None] * 0.5).astype(np.float32)
    out = (image * (1 - a) + np.array([255, 0, 0], np.float32) * a).astype(np.uint8)
    contours, _ = cv2.findContours((mask >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 0), 1)
    return out


def _label(tile_w: int, text: str) -> np.ndarray:
    bar = np.full((HEADER, tile_w, 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def render_sheet(faces: str, n: int = 4, seed: int = 0) -> np.ndarray:
    photos = scan_photos(faces)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photos))
    rows, used = [], 0
    for i in order:
        if used == n:
            break
        photo = photos[i]
        variants = [Variant(None)]
        for family in FAMILIES:
            donors = ()
            if family in DONOR_FAMILIES:
                others = [p for p in photos if p.person != photo.person]
                if others:
                    picks = rng.choice(len(others), size=min(DONOR_CANDIDATES, len(others)), replace=False)
                    donors = tuple(others[int(j)].path for j in picks)
            variants.append(Variant(family, donors))
        outcome = make_samples(photo.path, variants, seed, int(i))
        if outcome.skipped or any(s is None for s in outcome.samples):
            continue
        real = outcome.samples[0].image
        tiles = [real]
        for s in outcome.samples[1:]:
            m = s.mask
            grey = np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)
            tiles += [s.image, grey, overlay(s.image, m)]
        rows.append(tiles)
        used += 1
    if not rows:
        raise SystemExit(f"no usable faces under {faces}")
    titles = ["real"] + [f"{f} {w}" for f in FAMILIES for w in ("image", "mask", "overlay")]
    tile = FACE_SIZE + PAD
    sheet = np.full((HEADER + tile * len(rows), tile * len(titles), 3), 255, np.uint8)
    for c, t in enumerate(titles):
        sheet[:HEADER, c * tile: c * tile + FACE_SIZE] = _label(FACE_SIZE, t)
    for r, tiles in enumerate(rows):
        for c, img in enumerate(tiles):
            y, x = HEADER + r * tile, c * tile
            sheet[y: y + FACE_SIZE, x: x + FACE_SIZE] = img
    return sheet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="contact sheet of forged faces (image | mask | overlay per family)")
    ap.add_argument("--faces", required=True, help="folder of real face photos")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--n", type=int, default=4, help="photos (rows), each forged by every family")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    sheet = render_sheet(a.faces, a.n, a.seed)
    cv2.imwrite(a.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {a.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
