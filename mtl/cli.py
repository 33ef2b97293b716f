"""Command line: ``mtl scan PATH... --out DIR [--model SPEC] [--every K]`` (also ``python -m mtl scan``).

Scans images, videos and folders (recursively) and writes ``DIR/report.json``, per-image masks under ``DIR/masks/``
and annotated clips under ``DIR/annotated/``. A file that cannot be read becomes an item with verdict "error"; the
rest are still scanned. Exit status: 0 when every item was analysed, 1 when some were errors, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .pipeline import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, InputError


def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _sniff(path: Path) -> str:
    """The kind of a file named on the command line whose extension says nothing."""
    try:
        from PIL import Image

        with Image.open(path):
            return "image"
    except Exception:
        return "video"  # the video reader gives the clearer message when it is neither


def collect(paths: list[str]) -> list[tuple[str, Path, str]]:
    """(path as given, path, kind) for every input; folders are walked, keeping files with known extensions."""
    items = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.name.startswith(".") and _kind(f):
                    items.append((str(f), f, _kind(f)))
        else:
            items.append((given, p, _kind(p) or (_sniff(p) if p.is_file() else "image")))
    return items


def _slug(i: int, path: Path) -> str:
    return f"{i:04d}_" + (re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60] or "item")


def _empty_item(given: str, kind: str) -> dict:
    return {"path": given, "kind": kind, "verdict": "error", "p_fake": None, "method": None, "mask": None,
            "faces": [], "frames": [], "annotated": None, "error": None}


def scan_image(given: str, path: Path, out: Path, slug: str, model) -> dict:
    from PIL import Image

    from .pipeline import analyze_image
    from .render import mask_to_uint8

    item = _empty_item(given, "image")
    r = analyze_image(path, model)
    rel = Path("masks") / f"{slug}.png"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask_to_uint8(r.mask)).save(out / rel)
    d = r.to_dict()
    item.update(verdict=d["verdict"], p_fake=d["p_fake"], method=d["method"], faces=d["faces"], mask=rel.as_posix())
    return item


def scan_video(given: str, path: Path, out: Path, slug: str, model, every: int, max_duration) -> dict:
    from .pipeline import analyze_video

    item = _empty_item(given, "video")
    rel = Path("annotated") / f"{slug}.mp4"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    v = analyze_video(path, model, every=every, out_path=out / rel, max_duration=max_duration)
    d = v.to_dict()
    item.update(verdict=d["verdict"], p_fake=d["p_fake"], method=d["method"], faces=d["faces"], frames=d["frames"],
                annotated=rel.as_posix())
    return item


def scan(paths: list[str], out: str | Path, model=None, every: int = 1, max_duration: float | None = None,
         show_progress: bool = True) -> dict:
    """Scan inputs and write ``out/report.json``; returns the report."""
    from tqdm import tqdm

    from .pipeline import get_model, model_name

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = get_model(model)
    items = []
    inputs = collect(paths)
    for i, (given, path, kind) in enumerate(tqdm(inputs, desc="scanning", unit="file", disable=not show_progress)):
        try:
            if not path.exists():
                raise InputError(f"{given}: file not found")
            if kind == "image":
                item = scan_image(given, path, out, _slug(i, path), m)
            else:
                item = scan_video(given, path, out, _slug(i, path), m, every, max_duration)
        except InputError as e:
            item = _empty_item(given, kind)
            item["error"] = str(e)
        except Exception as e:  # one bad file must not end the scan
            item = _empty_item(given, kind)
            item["error"] = f"{type(e).__name__}: {e}"
        items.append(item)
    report = {"model": model_name(m), "items": items}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mtl", description="Detect and segment manipulated faces (ClassNSeg).")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scan", help="scan images, videos and folders; write DIR/report.json")
    s.add_argument("paths", nargs="+", metavar="PATH", help="images, videos or folders (walked recursively)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, masks/ and annotated/")
    s.add_argument("--model", default=None, metavar="SPEC",
                   help="a checkpoint folder or a Hub id owner/name[@rev] (default: $MTL_MODEL, else the shipped one)")
    s.add_argument("--every", type=int, default=1, metavar="K", help="analyse every K-th video frame (default 1)")
    s.add_argument("--max-duration", type=float, default=None, metavar="S",
                   help="skip (as errors) videos longer than S seconds (default: 600)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.every < 1:
        print("mtl scan: --every must be at least 1", file=sys.stderr)
        return 2
    from .video import DEFAULT_MAX_DURATION_S

    try:
        report = scan(args.paths, args.out, args.model, args.every,
                      args.max_duration if args.max_duration is not None else DEFAULT_MAX_DURATION_S,
                      show_progress=not args.quiet)
    except Exception as e:  # the model could not be loaded, the output folder cannot be written, ...
        print(f"mtl scan: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for it in report["items"]:
        counts[it["verdict"]] = counts.get(it["verdict"], 0) + 1
    n = len(report["items"])
    print(f"{n} item{'s' if n != 1 else ''}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
          + f" -> {Path(args.out) / 'report.json'}")
    return 1 if counts.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
