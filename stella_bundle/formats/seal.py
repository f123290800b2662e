"""The seal of an evidence chunk: its predicate (schemas/evidence-chunk.schema.json).

Defined in `evidence/seal.py` and `evidence/config.py`, where chunks are written and sealed;
building, signing and parsing seal files stay there.
"""

from __future__ import annotations

from ..evidence.config import CollectorInfo, LossCounters, ProbeFailure, ProbeReattachment
from ..evidence.seal import SEAL_REASONS, ChunkContent, PreviousLink, SealPredicate

__all__ = [
    "SEAL_REASONS",
    "ChunkContent",
    "CollectorInfo",
    "LossCounters",
    "PreviousLink",
    "ProbeFailure",
    "ProbeReattachment",
    "SealPredicate",
]
