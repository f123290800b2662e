"""The bundle manifest's predicate (schemas/bundle-manifest.schema.json).

Defined in `bundle/manifest.py`, with the Statement around it (one subject per listed file).
"""

from __future__ import annotations

from ..bundle.manifest import BuilderInfo, EvidenceWindow, ManifestFile, ManifestPredicate, ViewInfo

__all__ = ["BuilderInfo", "EvidenceWindow", "ManifestFile", "ManifestPredicate", "ViewInfo"]
