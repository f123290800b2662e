"""Where things live inside a `.stella.bundle.tgz` (DESIGN.md §4 "Bundle") and in what order.

Entries are sorted by (section, path). The section order puts what authenticates and explains
the bundle first: a streaming verifier meets the signed manifest, then the function maps, then
the bulk evidence, so it never has to hold evidence back while waiting for what judges it.
"""

from __future__ import annotations

import re
from typing import Final

from ..formats.manifest import MANIFEST, MANIFEST_ENVELOPE

BUNDLE_SUFFIX: Final = ".stella.bundle.tgz"
FUNCTION_MAPS: Final = "function-maps/"
SCHEMAS: Final = "schemas/"
PROBES: Final = "probes/"
EVIDENCE: Final = "evidence/"
OBSERVATIONS: Final = "observations/"
VERIFICATION: Final = "verification/"
PROBES_LOCK: Final = "probes/probes.lock.json"

SECTIONS: Final = (
    MANIFEST,
    MANIFEST_ENVELOPE,
    FUNCTION_MAPS,
    SCHEMAS,
    PROBES,
    EVIDENCE,
    OBSERVATIONS,
    VERIFICATION,
)

CHUNK_RE: Final = re.compile(r"^evidence/(?P<chain>[^/]+)/(?P<seq>\d{10})\.ndjson\.zst$")
SEAL_RE: Final = re.compile(r"^evidence/(?P<chain>[^/]+)/(?P<seq>\d{10})\.seal\.dsse\.json$")
FUNCTION_MAP_RE: Final = re.compile(r"^function-maps/(?P<service>[^/]+)-function-map\.json$")
FUNCTION_MAP_ENVELOPE_RE: Final = re.compile(
    r"^function-maps/(?P<service>[^/]+)-function-map\.dsse\.json$"
)
PRUNE_RE: Final = re.compile(r"^evidence/(?P<chain>[^/]+)/prune\.dsse\.json$")
OBSERVATIONS_RE: Final = re.compile(r"^observations/(?P<label>[^/]+)-observations\.ndjson$")
SCHEMA_RE: Final = re.compile(r"^schemas/[^/]+\.json$")
PROBE_OBJECT_RE: Final = re.compile(r"^probes/[^/]+\.bpf\.o$")
SERVICE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def section_rank(name: str) -> int:
    for rank, section in enumerate(SECTIONS):
        if name == section or (section.endswith("/") and name.startswith(section)):
            return rank
    return len(SECTIONS)


def entry_order(name: str) -> tuple[int, bytes]:
    """Sort key of an archive entry: section, then the path's UTF-8 bytes."""
    return section_rank(name), name.encode("utf-8")


def function_map_paths(service: str) -> tuple[str, str]:
    return (
        f"{FUNCTION_MAPS}{service}-function-map.json",
        f"{FUNCTION_MAPS}{service}-function-map.dsse.json",
    )


def chunk_path(chain_id: str, sequence: int) -> str:
    return f"{EVIDENCE}{chain_id}/{sequence:010d}.ndjson.zst"


def seal_path(chain_id: str, sequence: int) -> str:
    return f"{EVIDENCE}{chain_id}/{sequence:010d}.seal.dsse.json"


def prune_path(chain_id: str) -> str:
    return f"{EVIDENCE}{chain_id}/prune.dsse.json"


def observations_path(label: str) -> str:
    return f"{OBSERVATIONS}{label}-observations.ndjson"
