"""Rewriting a real evidence chain as a collector-key holder could: records, seals, links.

`rewrite_chain` loads every chunk's records and every seal's Statement, applies the edits,
re-encodes and re-compresses each changed chunk (its subject digest, content digest, size,
record count and window recomputed as the writer computes them), then re-links every seal to
its predecessor as found and re-signs each changed seal with the given key. The result is a
chain whose only defect is the one the edits introduce.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard

from stella_bundle.attest.dsse import parse_envelope, sign_payload
from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import InputError
from stella_bundle.evidence.layout import chunk_name, seal_name
from stella_bundle.evidence.window import ObservationWindow

Predicate = dict[str, Any]
Records = dict[int, list[dict[str, Any]]]
RecordEdit = Callable[[Records, dict[int, Predicate]], None]
SealEdit = Callable[[dict[int, Predicate]], None]


def sequences(chain: Path) -> list[int]:
    found = []
    sequence = 1
    while (chain / seal_name(sequence)).exists():
        found.append(sequence)
        sequence += 1
    return found


def read_records(chain: Path, sequence: int) -> list[dict[str, Any]]:
    data = zstandard.ZstdDecompressor().stream_reader(
        (chain / chunk_name(sequence)).read_bytes(), read_across_frames=True
    )
    return [json.loads(line) for line in data.read().splitlines() if line.strip()]


def rewrite_chain(
    chain: Path,
    signer: Any,
    *,
    records: RecordEdit | None = None,
    seals: SealEdit | None = None,
    relink: bool = True,
) -> None:
    numbers = sequences(chain)
    envelopes = {
        s: parse_envelope(json.loads((chain / seal_name(s)).read_bytes())) for s in numbers
    }
    statements = {s: json.loads(envelopes[s].payload) for s in numbers}
    predicates = {s: statements[s]["predicate"] for s in numbers}
    if records is not None:
        loaded = {s: read_records(chain, s) for s in numbers}
        before = {s: canonical_bytes(r) for s, r in loaded.items()}
        records(loaded, predicates)
        for sequence in numbers:
            if canonical_bytes(loaded[sequence]) != before[sequence]:
                _rewrite_chunk(chain, sequence, loaded[sequence], statements[sequence])
    if seals is not None:
        seals(predicates)
    previous_digest: str | None = None
    for sequence in numbers:
        statement = statements[sequence]
        link = statement["predicate"]["previous"]
        if relink and link is not None and previous_digest is not None:
            link["sha256"] = previous_digest
        payload = _encoded(statement)
        if payload != envelopes[sequence].payload:
            signed = sign_payload(payload, envelopes[sequence].payload_type, [signer])
            (chain / seal_name(sequence)).write_bytes(canonical_bytes(signed.to_dict()))
        previous_digest = hashlib.sha256((chain / seal_name(sequence)).read_bytes()).hexdigest()


def _encoded(statement: dict[str, Any]) -> bytes:
    """Canonical JSON, or for integers past RFC 8785's range (which a hostile collector-key
    holder may sign all the same) the same layout written by the standard library."""
    try:
        return canonical_bytes(statement)
    except InputError:
        return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def _rewrite_chunk(
    chain: Path, sequence: int, records: list[dict[str, Any]], statement: dict[str, Any]
) -> None:
    content = b"".join(canonical_bytes(record) + b"\n" for record in records)
    compressed = zstandard.ZstdCompressor().compress(content)
    (chain / chunk_name(sequence)).write_bytes(compressed)
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(compressed).hexdigest()
    predicate = statement["predicate"]
    predicate["content"].update(
        sha256=hashlib.sha256(content).hexdigest(), bytes=len(content), records=len(records)
    )
    window = ObservationWindow()
    for record in records:
        window.add(record)
    predicate["window"] = {
        "first_observed_at": window.first_observed_at,
        "last_observed_at": window.last_observed_at,
    }
