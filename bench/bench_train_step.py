"""Training-step time of the paper's encoder against timm backbones (from scratch), on this machine.

    python bench/bench_train_step.py [--encoders classnseg timm/resnet18 ...] [--batch 16] [--threads 2] [--reps 5]
    python bench/bench_train_step.py --encoders timm/tf_efficientnet_lite0 timm/tf_efficientnet_lite0+deep

One step = forward (decoder fed the true label's half), the loss as train.train computes it, backward and an AdamW
update, under bf16 autocast with channels-last tensors where the CPU has bf16 (as train.train runs). Prints each
encoder's parameter count, the median step time, faces per second and the ratio against the first encoder in the list,
all measured in this run. ``--reconstruction`` also runs the reconstruction arm (the paper's recipe). A ``+deep``
suffix keeps a timm backbone's stride-32 stage (``train.train --deep-stage``); a ``+compile`` suffix runs the
network's forward through ``torch.compile`` (its compile time, in the uncounted first step, is printed apart); a
``+sam`` suffix takes sharpness-aware steps (``train.train --sam 0.05``: two passes a step).

    python bench/bench_train_step.py --encoders timm/tf_efficientnet_lite0 timm/tf_efficientnet_lite0+compile --batch 64
    python bench/bench_train_step.py --encoders timm/tf_efficientnet_lite0 timm/tf_efficientnet_lite0+sam --batch 64

``--allocator`` measures each encoder twice in this process, first with the C allocator's default settings, then after
``mtl.allocator.keep_freed_memory`` (as train.train runs), and prints the step time, the minor page faults a step and
the kernel's share of the process's CPU time for both, with their ratio:

    python bench/bench_train_step.py --encoders timm/tf_efficientnet_lite0 --batch 64 --allocator
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mtl.allocator import keep_freed_memory  # noqa: E402
from mtl.fastpath import cpu_has_bf16  # noqa: E402
from mtl.losses import multitask_loss  # noqa: E402
from mtl.model import ClassNSeg  # noqa: E402
from train import sam  # noqa: E402

DEFAULT_ENCODERS = ["classnseg", "timm/resnet18", "timm/mobilenetv3_large_100", "timm/efficientnet_b0"]


def step_seconds(encoder: str, batch: int, reps: int, reconstruction: bool) -> tuple[float, int, float, dict]:
    """Median step time, the encoder's parameter count, the first (uncounted) step's time, and over the counted steps
    the minor page faults a step and the kernel's share of the process's CPU time."""
    torch.manual_seed(0)
    name, *suffixes = encoder.split("+")
    unknown = set(suffixes) - {"deep", "compile", "sam"}
    if unknown:
        raise SystemExit(f"{encoder}: unknown suffix +{' +'.join(sorted(unknown))} (known: +deep, +compile, +sam)")
    deep, compiled, sharp = "deep" in suffixes, "compile" in suffixes, "sam" in suffixes
    model = ClassNSeg(encoder=name, deep_stage=deep).to(memory_format=torch.channels_last).train()
    network = torch.compile(model) if compiled else model
    params = sum(p.numel() for p in model.encoder.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch) % 2
    masks = torch.randint(0, 2, (batch, 256, 256))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if cpu_has_bf16() else nullcontext

    def loss():
        with autocast():
            out = network(x, gate=labels, reconstruct=reconstruction)
            return multitask_loss(out, x, labels, masks, reconstruction_weight=float(reconstruction),
                                  margin_weight=1.0, dense_weight=1.0).total

    times = []
    for i in range(reps + 1):  # the first step warms up and is not counted
        if i == 1:
            usage = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        if sharp:  # as train.train takes a sharpness-aware step
            sam.gradient_uphill(model, 0.05, lambda: loss().backward())
        optimizer.step()
        times.append(time.perf_counter() - t)
    end = resource.getrusage(resource.RUSAGE_SELF)
    kernel, user = end.ru_stime - usage.ru_stime, end.ru_utime - usage.ru_utime
    kernel_time = {"faults": (end.ru_minflt - usage.ru_minflt) / reps, "system": kernel / max(kernel + user, 1e-9)}
    return statistics.median(times[1:]), params, times[0], kernel_time


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", nargs="+", default=DEFAULT_ENCODERS)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--reconstruction", action="store_true", help="also run the reconstruction arm")
    p.add_argument("--allocator", action="store_true",
                   help="each encoder with the C allocator's defaults, then with mtl.allocator.keep_freed_memory")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.allocator:
        return compare_allocator(args)
    print(f"batch {args.batch}, {args.threads} threads, bf16 autocast: {cpu_has_bf16()}, "
          f"reconstruction arm: {args.reconstruction}")
    base = None
    for enc in args.encoders:
        seconds, params, first, _ = step_seconds(enc, args.batch, args.reps, args.reconstruction)
        base = base or seconds
        print(f"{enc:<38} encoder {params / 1e6:5.2f} M params  step {seconds * 1000:7.0f} ms  "
              f"{args.batch / seconds:6.1f} faces/s  x{seconds / base:.2f} the time of {args.encoders[0]}"
              + (f"  (first step, compiling: {first:.0f} s)" if enc.endswith("+compile") else ""), flush=True)


def compare_allocator(args) -> None:
    """Every encoder under the allocator's defaults first, then all again with freed memory kept (not reversible)."""
    print(f"batch {args.batch}, {args.threads} threads, bf16 autocast: {cpu_has_bf16()}")
    runs = {}
    for setting in ("default", "kept"):
        if setting == "kept" and not keep_freed_memory():
            print("keep_freed_memory: not available here (not glibc on Linux); nothing to compare")
            return
        for enc in args.encoders:
            seconds, _, _, kernel = step_seconds(enc, args.batch, args.reps, args.reconstruction)
            runs[enc, setting] = seconds
            print(f"{enc:<38} allocator {setting:<8} step {seconds * 1000:7.0f} ms  {args.batch / seconds:6.1f} "
                  f"faces/s  {kernel['faults']:9.0f} page faults a step  kernel {kernel['system']:.0%} of CPU time"
                  + (f"  x{seconds / runs[enc, 'default']:.2f} the default's time" if setting == "kept" else ""),
                  flush=True)


if __name__ == "__main__":
    main()
