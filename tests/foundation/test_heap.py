"""`heap.keep_freed_blocks`: blocks freed by a pass over large input are reused, not given
back to the kernel and faulted in again for the next block."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Each round allocates and frees a few blocks of 1-3 MiB (as the scans do: decompressed
# blocks, their whole-line copies) and counts the minor page faults of all the rounds.
_SCRIPT = """
import resource, sys
from stella_bundle.heap import keep_freed_blocks
if sys.argv[1] == "keep":
    assert keep_freed_blocks()
sizes = [(1 << 20) + 4096 * (i % 7) for i in range(3)] + [3 << 20]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for round in range(200):
    blocks = [bytes(size) for size in sizes]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout)


def test_freed_blocks_are_reused_not_faulted_in_again() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt only")
    kept = _faults("keep")
    # 200 rounds of ~6 MiB: ~20,000 faults with glibc's own thresholds (some blocks mapped
    # afresh each round); reused, about the first round's ~1,500.
    assert kept < 6_000, kept
    assert _faults("default") > 3 * kept
