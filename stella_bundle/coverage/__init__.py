"""Coverage: the verification engine. Observations (files, chains, a store's rows) aggregated per
node (`scan`, with its fast decoders `fastdecode` and `patterns`), then judged against a function
map (`engine`): the time window, per-path and per-tag rates, probe-type confidence, diagnoses of
missing symbols. `functionmap/` generates maps; this folder says how well observations cover one.

Entry point: `verify_files` (NDJSON files), `verify_map_files` (a map file and NDJSON files, the
map read while the files are scanned) or `verify_observations` (any records), each giving a
`VerificationResult`. The engine is imported when one of these is first used: `bundle build`
needs only the scan (`scan`, `fastdecode`) and does not pay for the engine's imports."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import (
        VerificationResult,
        VerifyOptions,
        verify_files,
        verify_map_files,
        verify_observations,
    )

__all__ = [
    "VerificationResult",
    "VerifyOptions",
    "verify_files",
    "verify_map_files",
    "verify_observations",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.engine"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
