"""PostgreSQL store: not yet built (the next commit)."""

from __future__ import annotations

from .base import ObservationStore, StoreError


def PostgresStore(url: str) -> ObservationStore:
    raise StoreError("the PostgreSQL store is not built yet")
