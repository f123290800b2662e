"""Helpers of the API tests (a unique module name: every test folder has a conftest)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stella_bundle.attest.dsse import envelope_bytes, sign_statement
from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.config import WriterConfig
from stella_bundle.evidence.layout import chunk_name, seal_name
from stella_bundle.evidence.writer import ChunkWriter
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
    priority_of,
)
from stella_bundle.formats.seal import CollectorInfo

PURL = "pkg:generic/api-test@1.0"
TAGS = ("crypto", "auth", "net", "file", "general")
PROBES = ("uprobe", "kprobe", "tracepoint", "fentry")
COLLECTOR = CollectorInfo("api-test", "host-1", None, "0.1.0", None)


def node_hash(index: int) -> str:
    return "sha256:" + hashlib.sha256(f"{PURL}#fn_{index}".encode()).hexdigest()


def statement(paths: int, *, min_rate: float = 0.8) -> dict[str, Any]:
    """A function map of `paths` paths of one node each (fn_0 … fn_{paths-1})."""
    expected = [
        ExpectedPath(
            f"api/{index:04d}",
            TAGS[index % len(TAGS)],
            priority_of(TAGS[index % len(TAGS)]),
            False,
            (ExpectedNode(PURL, f"fn_{index}", node_hash(index)),),
        )
        for index in range(paths)
    ]
    fmap = FunctionMap(
        service="api-svc",
        build_id="api-build",
        generated_at="2026-01-23T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.6"),
        coverage=Coverage(min_observation_rate=min_rate, fail_on_unexpected=False),
        hot_functions=(),
        expected_paths=tuple(expected),
    )
    return make_statement(
        [{"name": "api.cdx.json", "digest": {"sha256": "0" * 64}}],
        FUNCTION_MAP_PREDICATE,
        fmap.to_dict(),
    )


def statement_bytes(document: dict[str, Any]) -> bytes:
    return canonical_bytes(document)


def signed_bytes(document: dict[str, Any], signer: Any) -> bytes:
    return envelope_bytes(sign_statement(document, [signer]))


def records(
    count: int, paths: int, *, skip: int = 0, day: int = 23, stray: int = 0
) -> list[dict[str, Any]]:
    """`count` records over nodes skip … paths-1 (so the first `skip` paths are missing),
    spread over one hour of 2026-01-`day`, plus `stray` records of nodes outside the map."""
    out: list[dict[str, Any]] = []
    span = max(paths - skip, 1)
    for index in range(count):
        node = skip + index % span
        second = index * 3600 // max(count, 1)
        out.append(
            {
                "node_hash": node_hash(node),
                "function_name": f"fn_{node}",
                "purl": PURL,
                "probe_type": PROBES[index % len(PROBES)],
                "observed_at": f"2026-01-{day:02d}T10:{second // 60:02d}:{second % 60:02d}.000000Z",
                "pod_name": "api-svc-1",
                "container_id": f"{index % 3:064d}",
            }
        )
    for extra in range(stray):
        out.append(
            {
                "node_hash": node_hash(10_000 + extra),
                "function_name": f"stray_{extra}",
                "probe_type": "uprobe",
                "observed_at": f"2026-01-{day:02d}T10:30:{extra % 60:02d}.000000Z",
            }
        )
    return out


def write_chain(
    evidence: Path, chain_id: str, items: Iterable[dict[str, Any]], signer: Any, per_chunk: int = 50
) -> Path:
    """A real sealed chain written by the evidence writer (final seal on close)."""
    with ChunkWriter.open(
        evidence, chain_id, signer, WriterConfig(max_records=per_chunk), COLLECTOR
    ) as writer:
        for item in items:
            writer.append(dict(item))
    return evidence / chain_id


def chain_upload(chain_dir: Path) -> dict[str, Any]:
    """The POST /api/v1/evidence body of one chain directory: every sealed chunk, base64."""
    chunks = []
    sequence = 1
    while (chain_dir / seal_name(sequence)).exists():
        chunks.append(
            {
                "sequence": sequence,
                "chunk": base64.b64encode((chain_dir / chunk_name(sequence)).read_bytes()).decode(),
                "seal": base64.b64encode((chain_dir / seal_name(sequence)).read_bytes()).decode(),
            }
        )
        sequence += 1
    return {"chain_id": chain_dir.name, "chunks": chunks}
