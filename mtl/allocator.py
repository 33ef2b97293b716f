"""Keep the C allocator from handing large buffers back to the kernel between batches (glibc on Linux).

A training step on a batch of faces allocates activation and gradient buffers of tens of megabytes and frees them
before the next step. glibc's ``malloc`` serves each buffer above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on ``free``, so every step faults every page of them in anew: on 2 AVX2 cores a Lite0 step at
batch 64 took 15.3 s, 69% of it in the kernel (3 million page faults a step), and 3.6 s with freed memory kept
(``python bench/bench_train_step.py --encoders timm/tf_efficientnet_lite0 --batch 64 --allocator``); scoring 320
faces with ``train.evaluate`` took 23.8 s against 11.6 s. ``keep_freed_memory`` turns ``mmap`` off for ``malloc``
and stops the heap from being trimmed, so freed buffers are reused from the heap by the next step: the process keeps
its peak footprint instead of returning it between steps.
A preloaded jemalloc or tcmalloc (``LD_PRELOAD``) does the same job; where glibc is not the allocator this is a no-op.
train.train, train.calibrate and train.evaluate (scoring a dataset) call it. The app does not: with a preloaded
jemalloc its photo took 31.3 ms against 32.0 ms and its videos ran slower (``bench/bench_pipeline.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Make glibc reuse freed memory rather than return it to the kernel; True if the settings took effect."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    # mallopt returns 1 on success; a value over INT_MAX would wrap, so the trim threshold is INT_MAX itself
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
