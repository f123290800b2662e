"""The prune record's predicate (schemas/evidence-prune.schema.json).

Defined in `evidence/prune_record.py`, where retention writes it.
"""

from __future__ import annotations

from ..evidence.prune_record import EVIDENCE_PRUNE_PREDICATE, PruneRecord

__all__ = ["EVIDENCE_PRUNE_PREDICATE", "PruneRecord"]
