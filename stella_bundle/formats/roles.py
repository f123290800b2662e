"""The roles of a trust root (DESIGN.md §4 "Trust root"): who may sign which document.

Apart from `formats/trust_root.py` so that naming a role costs no import of the key libraries.
"""

from __future__ import annotations

from enum import StrEnum


class RoleName(StrEnum):
    """The roles of a trust root: who may sign what (DESIGN.md §4 "Trust root")."""

    FUNCTION_MAP = "function-map"  # function maps
    COLLECTOR = "collector"  # evidence seals and prune records
    BUILDER = "builder"  # bundle manifests
    AUDITOR = "auditor"  # verification reports


ROLES: tuple[str, ...] = tuple(role.value for role in RoleName)
