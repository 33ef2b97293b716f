"""Speed and agreement of the fast inference path against the reference network.

    python bench/bench_model.py [--reps 30] [--weights ../shared/weights/classnseg-official/full]

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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mtl.convert import convert_authors_checkpoint  # noqa: E402
from mtl.fastpath import cpu_has_bf16  # noqa: E402
from mtl.model import ClassNSeg  # noqa: E402

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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, crops, what = load(args.weights)
    print(f"model: {what}; torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 on CPU: {cpu_has_bf16()}")

    def reference(x):
        with torch.no_grad():
            return model(x, reconstruct=True)

    rows = []
    for batch in (1, 8):
        x = crops[:1] if batch == 1 else crops.repeat(4, 1, 1, 1)
        ref_ms, fast_ms = [], []
        for _ in range(3):  # interleave, so background load hits both alike
            ref_ms.append(median_ms(lambda: reference(x), max(3, args.reps // 3)))
            fast_ms.append(median_ms(lambda: model.predict(x, precision="auto"), args.reps))
        r, f = statistics.median(ref_ms) / batch, statistics.median(fast_ms) / batch
        rows.append((batch, r, f))
        print(f"batch {batch}: reference {r:7.2f} ms/face | fast {f:6.2f} ms/face | speed-up {r / f:5.1f}x")

    exact, fast = model.predict(crops, precision="fp32"), model.predict(crops, precision="auto")
    same = bool((exact.is_fake == fast.is_fake).all())
    print(f"verdicts identical (fp32 vs auto): {same}  p_fake fp32 {exact.p_fake.tolist()} auto {fast.p_fake.tolist()}")
    for i, name in enumerate(("real crop", "fake crop")):
        a, b = exact.mask[i] > 0.5, fast.mask[i] > 0.5
        union = int((a | b).sum())
        iou = float((a & b).sum()) / union if union else 1.0
        print(f"mask IoU at 0.5, {name}: {iou:.4f} ({int(a.sum())} vs {int(b.sum())} px)")
    print(f"target: >= 15x at batch 1 -> {'met' if rows[0][1] / rows[0][2] >= 15 else 'NOT met'}")


if __name__ == "__main__":
    main()
