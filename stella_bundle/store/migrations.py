"""Versioned schema migrations: each backend lists its own, applied in order, once each.

A migration is a list of statements run in one transaction together with the row recording
its version in `schema_migrations`, so a store is always at exactly one version. Versions
are never edited once released; a change of schema is a new version.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def check_sequence(migrations: tuple[Migration, ...]) -> int:
    """The latest version; the list must number 1, 2, 3… without gaps (a programming error)."""
    for index, migration in enumerate(migrations, start=1):
        if migration.version != index:
            raise AssertionError(f"migration {migration.version} out of order (expected {index})")
    return len(migrations)
