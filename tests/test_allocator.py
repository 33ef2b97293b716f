"""mtl.allocator: freed large buffers are reused by the next allocation instead of being faulted in anew."""

import subprocess
import sys

import pytest

from mtl import allocator

# a 64 MiB buffer (a training step's activations) filled and freed five times; the minor page faults of the last four
_LOOP = """
import ctypes, resource, sys
from mtl.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "kept" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def fill_and_free():
    buffer = libc.malloc(64 << 20)
    ctypes.memset(buffer, 1, 64 << 20)
    libc.free(buffer)
fill_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    fill_and_free()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _LOOP, setting], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only")
def test_kept_memory_is_reused_without_page_faults():
    _, default = _faults("default")
    kept, faults = _faults("kept")
    assert kept == "True"
    pages = 4 * (64 << 20) // 4096  # what four fresh 64 MiB buffers fault in (4 KiB pages)
    assert default > pages // 2, f"glibc's default should map each buffer anew: {default} faults"
    assert faults < pages // 50, f"with freed memory kept the buffer is reused: {faults} faults"
