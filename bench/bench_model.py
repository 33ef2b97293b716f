"""Speed and agreement of the fast inference path against the reference network.

    python bench/bench_model.py [--reps 30] [--weights ../shared/weights/classnseg-official/full]
    python bench/bench_model.py --model checkpoints/lite0-forge/a      # a checkpoint of one network

With ``--model`` the faces are the astronaut's (scikit-image's photograph) and, for a timm backbone, a third column
times the fast path without its backbone rewrites (the attribute-pair BatchNorm folds and the half turn of
``mtl.fastpath``), as it was before them.

Reference: the full network as the authors run it (encoder + both decoder branches, fp32, eval mode).
Fast: ClassNSeg.predict(precision="auto"). Timings are medians of interleaved runs on the authors' two test
crops (from ../shared; without it, a randomly initialised network on random crops, which says nothing about
denormals and little about agreement).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest.mock import patch

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mtl import fastpath, load_model  # noqa: E402
from mtl.convert import convert_authors_checkpoint  # noqa: E402
from mtl.encoders import ClassNSegEncoder  # noqa: E402
from mtl.fastpath import cpu_has_bf16  # noqa: E402
from mtl.model import ClassNSeg  # noqa: E402
from mtl.preprocess import to_model_input  # noqa: E402

SHARED = ROOT.parent / "shared"


def load(weights_dir: Path):
    golden = SHARED / "data/samples/classnseg/golden.npz"
    if weights_dir.is_dir() and golden.is_file():
        enc, dec = sorted(weights_dir.glob("encoder_*.pt"))[0], sorted(weights_dir.glob("decoder_*.pt"))[0]
        model = convert_authors_checkpoint(enc, dec)
        g = np.load(golden)
        key = weights_dir.name
        crops = torch.from_numpy(np.stack([g[f"{key}_real_input"], g[f"{key}_fake_input"]]))
        return model, crops, f"authors' {key} weights on their test pair"
    torch.manual_seed(0)
    return ClassNSeg().eval(), torch.randn(2, 3, 256, 256), "random weights, random input (../shared absent)"


def load_checkpoint(spec: str):
    import cv2
    from skimage import data

    model = load_model(spec)
    if not isinstance(model, ClassNSeg):
        raise SystemExit(f"{spec} is not one network (an ensemble?): name one of its members' folders")
    face = cv2.resize(data.astronaut()[30:230, 150:350], (256, 256), interpolation=cv2.INTER_AREA)  # her face
    crops = to_model_input([face, np.ascontiguousarray(face[:, ::-1])])
    return model, crops, f"{spec} on the astronaut's face and its mirror"


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights/classnseg-official/full")
    parser.add_argument("--model", help="a checkpoint of one network (folder or Hub id) instead of --weights")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, crops, what = load_checkpoint(args.model) if args.model else load(args.weights)
    print(f"model: {what}; torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 on CPU: {cpu_has_bf16()}")

    def reference(x):
        with torch.no_grad():
            return model(x, reconstruct=True)

    def fast(network):
        def run(x):
            model._fast = network
            return model.predict(x, precision="auto")
        return run

    model.predict(crops[:1])  # builds the fast path
    candidates = {"reference": reference, "fast": fast(model._fast)}
    if not isinstance(model.encoder, ClassNSegEncoder):
        with patch.object(fastpath, "checked_backbone", lambda original, prepared, probe: prepared):
            candidates["without"] = fast(fastpath.FastNetwork(model))
    rows = []
    for batch in (1, 8):
        x = crops[:1] if batch == 1 else crops.repeat(4, 1, 1, 1)
        times = {name: [] for name in candidates}
        for _ in range(3):  # interleave, so background load hits all alike
            for name, fn in candidates.items():
                times[name].append(median_ms(lambda: fn(x), max(3, args.reps // 3) if name == "reference" else args.reps))
        ms = {name: statistics.median(t) / batch for name, t in times.items()}
        r, f = ms["reference"], ms["fast"]
        rows.append((batch, r, f))
        line = f"batch {batch}: reference {r:7.2f} ms/face | fast {f:6.2f} ms/face | speed-up {r / f:5.1f}x"
        if "without" in ms:
            old = ms["without"]
            line += f" | without the backbone rewrites {old:6.2f} ms/face ({old / f:4.2f}x the fast path's time)"
        print(line)
    model._fast = None

    exact, fast = model.predict(crops, precision="fp32"), model.predict(crops, precision="auto")
    same = bool((exact.is_fake == fast.is_fake).all())
    print(f"verdicts identical (fp32 vs auto): {same}  p_fake fp32 {exact.p_fake.tolist()} auto {fast.p_fake.tolist()}")
    for i, name in enumerate(("face", "mirror") if args.model else ("real crop", "fake crop")):
        a, b = exact.mask[i] > 0.5, fast.mask[i] > 0.5
        union = int((a | b).sum())
        iou = float((a & b).sum()) / union if union else 1.0
        print(f"mask IoU at 0.5, {name}: {iou:.4f} ({int(a.sum())} vs {int(b.sum())} px)")
    if not args.model:  # the target is the authors' network's
        print(f"target: >= 15x at batch 1 -> {'met' if rows[0][1] / rows[0][2] >= 15 else 'NOT met'}")


if __name__ == "__main__":
    main()
