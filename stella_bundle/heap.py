"""The C allocator's thresholds for passes over large inputs in 1 MiB blocks; the cyclic
garbage collector paused over work that makes many acyclic objects (`gc_paused`).

`bundle build` and `bundle verify` decompress evidence in ~1 MiB blocks and hand each to
msgspec, hashes and the compressor; every block is freed before the next one. glibc's malloc
gives such a block back to the kernel (an mmap of its own, or a trim of the heap's top) and
the next one faults in fresh, zeroed pages: ~14,000 minor faults, 0.03-0.05 s of system time
per 57 MiB chunk scanned, and colder caches. With the thresholds raised the freed blocks are
reused (~3,000 faults; a worker's scan of that chunk 0.33 -> 0.29-0.30 s of CPU at load 3).
Peak memory is unchanged: memory that is kept is memory the pass already used at its peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (32 MiB is glibc's largest dynamic threshold).
MMAP_THRESHOLD = 32 * 1024 * 1024
# Free memory at the heap's top up to this size is kept for the next block.
TRIM_THRESHOLD = 64 * 1024 * 1024

_applied = False


def keep_freed_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds for this process and the workers it forks after
    (once); False where the C library has no `mallopt` (not glibc): nothing changes there."""
    global _applied
    if _applied:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    ):
        return False
    _applied = True
    return True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, back on after it if it was on.

    For work whose many objects hold no cycles (a function map, per-node states, a report):
    the collections their numbers set off would walk them all to free nothing. Objects made
    in the block and still alive after it are walked once by the first collection after it
    (a young generation of all of them): let them go inside the block when they are not needed
    after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
