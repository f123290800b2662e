"""Helpers of the evidence tests (a unique module name: every test folder has a conftest)."""

from __future__ import annotations

import hashlib
from typing import Any

from stella_bundle.formats.seal import CollectorInfo

COLLECTOR = CollectorInfo(
    id="collector-test",
    host="host-1",
    boot_id="6f1c4a0e-2d7e-4b7d-9f2b-3a1c5e7d9b11",
    version="0.1.0",
    probe_set_sha256=hashlib.sha256(b"probes").hexdigest(),
)


def make_record(index: int, run: str = "r") -> dict[str, Any]:
    """A typical function observation; `function_name` carries the index for read-back checks."""
    second, micro = divmod(index, 1000)
    return {
        "node_hash": "sha256:" + hashlib.sha256(str(index % 97).encode()).hexdigest(),
        "function_name": f"{run}_{index}",
        "probe_type": "uprobe",
        "observed_at": f"2026-01-23T{second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}.{micro * 1000:06d}Z",
        "purl": "pkg:deb/debian/openssl@3.0.11",
        "pid": 1000 + index % 17,
        "comm": "nginx",
        "binary_path": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "kind": "function",
    }


class FakeClock:
    """A monotonic clock that advances `step` seconds per call (age rotation without sleeping)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now
