"""Tetragon lines → signed evidence: parse (orjson), map, filter, append to a chain.

The chain is written by the evidence writer with the bridge's collector key; its seals carry
the source (`tetragon`, node name, export file) and, in `loss`, every event not recorded
(`filtered_out`, with `by_reason` naming kind and reason) and every value redacted.
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from securesystemslib.signer import Signer

from .. import __version__
from ..evidence.config import WriterConfig
from ..evidence.writer import ChunkWriter
from ..formats.record import ObservationError
from ..formats.seal import CollectorInfo
from .events import EventMapper
from .sources import DEFAULT_MAX_LINE_BYTES, Line

COLLECTOR_ID: Final = "stella-tetragon"
# Refused lines named one by one in the result (the rest are counted).
MAX_NAMED_PROBLEMS: Final = 50


@dataclass
class IngestResult:
    chain_id: str
    chain_dir: Path
    lines: int = 0
    records: int = 0
    chunks: int = 0
    node_name: str | None = None
    dropped: Counter[str] = field(default_factory=Counter)
    redacted: Counter[str] = field(default_factory=Counter)
    upstream_dropped: int = 0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "chain_dir": str(self.chain_dir),
            "lines": self.lines,
            "records": self.records,
            "chunks": self.chunks,
            "node_name": self.node_name,
            "dropped": dict(sorted(self.dropped.items())),
            "redacted": dict(sorted(self.redacted.items())),
            "upstream_dropped": self.upstream_dropped,
            "problems": self.problems,
        }


def default_chain_id(node_name: str) -> str:
    """`tetragon-<node>`, reduced to the characters a chain id (a directory name) allows."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", node_name).strip("-.")[:118]
    return f"tetragon-{cleaned or 'node'}"


class TetragonIngest:
    """Appends mapped events to one chain; open the writer on the first event (its node)."""

    def __init__(
        self,
        evidence_dir: Path,
        chain_id: str,
        signer: Signer,
        mapper: EventMapper,
        *,
        config: WriterConfig | None = None,
        source_name: str = "",
        node_name: str | None = None,
        max_object_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self.evidence_dir = evidence_dir
        self.chain_id = chain_id
        self.signer = signer
        self.mapper = mapper
        self.config = config
        self.source_name = source_name
        self.max_object_bytes = max_object_bytes
        self.result = IngestResult(chain_id, evidence_dir / chain_id, node_name=node_name)
        self._writer: ChunkWriter | None = None
        self._reported_redactions: Counter[str] = Counter()
        self._reported_upstream = 0

    def _open(self, node_name: str | None) -> ChunkWriter:
        host = node_name or self.result.node_name or socket.gethostname()
        self.result.node_name = host
        origin = {"type": "tetragon", "node_name": host}
        if self.source_name:
            origin["export_file"] = self.source_name
        collector = CollectorInfo(COLLECTOR_ID, host, None, __version__, None, origin)
        if not self.chain_id:
            self.chain_id = default_chain_id(host)
            self.result.chain_id = self.chain_id
            self.result.chain_dir = self.evidence_dir / self.chain_id
        self._writer = ChunkWriter.open(
            self.evidence_dir, self.chain_id, self.signer, self.config, collector
        )
        return self._writer

    def feed(self, lines: Iterable[Line]) -> None:
        """The hot loop: `process_uprobe` lines through the typed fast path, the rest parsed
        with orjson and mapped; a pretty-printed object (`{` alone on a line, as Tetragon's
        documentation shows events) is gathered up to its closing `}` at column 0."""
        loads = orjson.loads
        result = self.result
        map_uprobe_line = self.mapper.map_uprobe_line
        writer = self._writer
        append = writer.append if writer is not None else None
        append_encoded = writer.append_encoded if writer is not None else None
        fast = 0  # lines recorded by the fast path (added to the result once, at the end)
        gathered: list[bytes] | None = None  # lines of a pretty-printed object
        gathered_at = Line("", 0, None)
        gathered_size = 0
        try:
            for line in lines:
                data = line[2]  # Line.data; indexing a tuple is the cheapest access
                if append is not None and gathered is None and data is not None:
                    mapped = map_uprobe_line(data)
                    if type(mapped) is tuple:
                        append_encoded(*mapped)  # type: ignore[misc]
                        fast += 1
                        continue
                    if mapped is not None:
                        try:
                            append(mapped)  # type: ignore[arg-type]
                        except ObservationError:
                            result.lines += 1
                            self._refuse(line, "process_uprobe:invalid_record")
                            continue
                        fast += 1
                        continue
                if gathered is not None:
                    if data is None or gathered_size + len(data) > self.max_object_bytes:
                        self._refuse(gathered_at, "line:too_long")
                        gathered = None
                        continue
                    gathered.append(data)
                    gathered_size += len(data) + 1
                    if data.rstrip() == b"}":
                        try:
                            event = loads(b"\n".join(gathered))
                        except orjson.JSONDecodeError:
                            self._refuse(gathered_at, "line:malformed_json")
                        else:
                            self._event(gathered_at, event)
                        gathered = None
                    continue
                if data is not None and (not data or data.isspace()):
                    continue  # a blank line is no event (and orjson's error for it is slow)
                result.lines += 1
                if data is None:
                    self._refuse(line, "line:too_long")
                    continue
                try:
                    event = loads(data)
                except orjson.JSONDecodeError:
                    stripped = data.strip()
                    if not stripped:
                        result.lines -= 1
                    elif stripped == b"{":
                        gathered, gathered_at, gathered_size = [data], line, len(data) + 1
                    else:
                        self._refuse(line, "line:malformed_json")
                    continue
                self._event(line, event)
                if append is None and self._writer is not None:
                    append = self._writer.append
                    append_encoded = self._writer.append_encoded
            if gathered is not None:
                self._refuse(gathered_at, "line:malformed_json")  # the input ended inside it
        finally:
            result.lines += fast
            result.records += fast
        self._account()

    def feed_events(self, events: Iterable[dict[str, Any]], source: str) -> None:
        """Already-parsed events (the gRPC stream), numbered as they arrive."""
        for number, event in enumerate(events, start=1):
            self.result.lines += 1
            self._event(Line(source, number, None), event)
            if number % 1000 == 0:
                self._account()
        self._account()

    def _event(self, line: Line, event: Any) -> None:
        """One parsed event: mapped and appended, or refused with its reason."""
        writer = self._writer
        if writer is None:
            node = event.get("node_name") if type(event) is dict else None
            writer = self._open(node if type(node) is str and node else None)
        mapped = self.mapper.map(event)
        if isinstance(mapped, str):
            self._refuse(line, mapped)
            return
        try:
            writer.append(mapped)
        except ObservationError:  # a value the record format refuses (e.g. a NUL in a path)
            self._refuse(line, f"{self.mapper.kind_of(event)}:invalid_record")
            return
        self.result.records += 1

    def note_gap(self, reason: str) -> None:
        """Lines may have been missed (how many is unknown): said in the seal, by reason."""
        self.result.dropped[reason] += 1
        writer = self._writer or self._open(None)
        writer.add_loss(by_reason={f"gap.{reason}": 1})

    def _refuse(self, line: Line, reason: str) -> None:
        result = self.result
        result.dropped[reason] += 1
        if len(result.problems) < MAX_NAMED_PROBLEMS:
            result.problems.append(f"{line.source}:{line.number}: {reason}")
        writer = self._writer or self._open(None)
        writer.add_loss(filtered_out=1, by_reason={f"dropped.{reason}": 1})

    def _account(self) -> None:
        """Move redaction counts and Tetragon's own drops gathered so far into the open chunk."""
        counts = self.mapper.counts
        fresh = {k: v - self._reported_redactions[k] for k, v in counts.items()}
        fresh = {k: v for k, v in fresh.items() if v}
        upstream = self.mapper.upstream_dropped - self._reported_upstream
        if not fresh and not upstream:
            return
        writer = self._writer or self._open(None)
        writer.add_loss(ring_buffer_dropped=upstream, by_reason=fresh)
        self._reported_redactions.update(fresh)
        self._reported_upstream = self.mapper.upstream_dropped

    def abort(self) -> None:
        """After an input error: seal what was recorded (not final: the input did not end)."""
        if self._writer is not None:
            self._account()
            self._writer.close(final=False)

    def close(self) -> IngestResult:
        self._account()
        writer = self._writer or self._open(None)
        writer.close(final=True)
        self.result.chunks = writer.sealed_chunks
        self.result.redacted = Counter(dict(self.mapper.counts))
        self.result.upstream_dropped = self.mapper.upstream_dropped
        return self.result
