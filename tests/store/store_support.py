"""Helpers of the store tests (a unique module name: every test folder has a conftest)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.config import WriterConfig
from stella_bundle.evidence.writer import ChunkWriter
from stella_bundle.formats.function_map import FunctionMap
from stella_bundle.formats.seal import CollectorInfo
from stella_bundle.functionmap.generate import GenerateOptions, generate_function_map

REPO = Path(__file__).resolve().parents[2]
JAVA_SBOM = REPO / "tests" / "data" / "external" / "cyclonedx" / "dep-scan-bom-evinse-java.json"
COLLECTOR = CollectorInfo("store-test", "host-1", None, "0.1.0", None)
PROBES = ("uprobe", "kprobe", "tracepoint", "fentry")


def make_map() -> FunctionMap:
    return generate_function_map(GenerateOptions(sbom=JAVA_SBOM, service="svc")).function_map


def write_map(path: Path) -> Path:
    result = generate_function_map(GenerateOptions(sbom=JAVA_SBOM, service="svc"))
    path.write_bytes(canonical_bytes(result.statement))
    return path


def unexpected_hash(index: int) -> str:
    return "sha256:" + hashlib.sha256(f"unexpected-{index}".encode()).hexdigest()


def observations(fmap: FunctionMap, days: int = 3, skip_paths: int = 2) -> list[dict[str, Any]]:
    """Records of most nodes of the map over `days` days (2026-01-20 on), some aggregated,
    several probe types, containers, and a few nodes outside the map."""
    out: list[dict[str, Any]] = []
    paths = fmap.expected_paths[skip_paths:]
    index = 0
    for day in range(days):
        for path in paths:
            for node in path.nodes:
                index += 1
                record: dict[str, Any] = {
                    "node_hash": node.node_hash,
                    "function_name": node.symbol,
                    "purl": node.purl,
                    "probe_type": PROBES[index % len(PROBES)],
                    "observed_at": f"2026-01-{20 + day:02d}T{index % 24:02d}:{index % 60:02d}:00.000000Z",
                    "container_id": f"c{index % 3:063d}",
                    "pod_name": "svc-7d9f" if index % 2 else "other",
                }
                if index % 5 == 0:
                    record["count"] = 7
                    record["first_observed_at"] = record["observed_at"]
                    record["last_observed_at"] = (
                        f"2026-01-{20 + day:02d}T{index % 24:02d}:{index % 60:02d}:30.000000Z"
                    )
                out.append(record)
        for extra in range(3):
            out.append(
                {
                    "node_hash": unexpected_hash(extra),
                    "function_name": f"stray_{extra}_{day}",
                    "probe_type": "uprobe",
                    "observed_at": f"2026-01-{20 + day:02d}T12:00:0{extra}.000000Z",
                    "comm": "svc",
                }
            )
    return out


def write_chain(
    evidence: Path,
    chain_id: str,
    records: Iterable[dict[str, Any]],
    signer: Any,
    per_chunk: int = 10,
) -> Path:
    """A real sealed chain written by the evidence writer (final seal on close)."""
    with ChunkWriter.open(
        evidence, chain_id, signer, WriterConfig(max_records=per_chunk), COLLECTOR
    ) as writer:
        for item in records:
            writer.append(dict(item))
    return evidence / chain_id


def write_ndjson(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(canonical_bytes(r) + b"\n" for r in records))
    return path


def parse_json(text: str) -> Any:
    return json.loads(text)


# The rollup rows of a store, comparable between stores (tests of the migrations).
ROLLUPS_IN_ORDER = "SELECT * FROM node_rollups ORDER BY bucket, node_hash"
FINE_ROLLUPS_IN_ORDER = (
    "SELECT * FROM fine_rollups ORDER BY bucket, node_hash",
    "SELECT * FROM fine_buckets ORDER BY bucket",
)


def rollup_tables(store: Any) -> list[list[Any]]:
    """Every rollup table of a store: daily and ten-minute rows, ten-minute buckets."""
    return [store.db.execute(q).fetchall() for q in (ROLLUPS_IN_ORDER, *FINE_ROLLUPS_IN_ORDER)]


class NoRollups:
    """Stands in for `store.rollups.Rollups` when a test ingests into a store at a schema
    version before the rollups (nothing to fold, nothing upserted)."""

    spans = (0, 0)

    def __len__(self) -> int:
        return 0

    def add(self, chunk: Any) -> None:
        return None

    def full(self) -> bool:
        return False

    def take(self, final: bool) -> Any:
        from stella_bundle.store.rollups import Fold

        return Fold([], [], [])
