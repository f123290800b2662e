"""Tetragon lines → signed evidence: parse (orjson), map, filter, append to a chain.

The chain is written by the evidence writer with the bridge's collector key; its seals carry
the source (`tetragon`, node name, export file) and, in `loss`, every event not recorded
(`filtered_out`, with `by_reason` naming kind and reason) and every value redacted.
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import orjson
from securesystemslib.signer import Signer

from .. import __version__
from ..evidence.config import WriterConfig
from ..evidence.writer import ChunkWriter
from ..formats.flat import read_flat
from ..formats.record import ObservationError
from ..formats.seal import CollectorInfo
from .events import (
    GAP_THROTTLED,
    THROTTLE_START,
    EventMapper,
    event_identity,
    identity_kind,
    node_name_of,
)
from .grpc_source import Undecodable
from .sources import DEFAULT_MAX_LINE_BYTES, Line, LineBlock

COLLECTOR_ID: Final = "stella-tetragon"
# A live input's redaction counts are moved into the open chunk every this many events.
ACCOUNT_EVERY: Final = 1000
# Refused lines named one by one in the result (the rest are counted).
MAX_NAMED_PROBLEMS: Final = 50

# Between two `feed` calls: the lines of a pretty-printed object not closed yet (None: not
# inside one), the line it began on, and its size so far.
_Gathered = tuple[list[bytes] | None, Line, int]
_NOT_GATHERING: Final[_Gathered] = (None, Line("", 0, None), 0)


class SeenEvents:
    """The identities of the events recorded lately (`events.identity_of`), to drop an event
    read twice, by the second of its time (a copy has the same time): events come about in
    time order, so the set looked in is small and at hand (one set of them all cost ~0.5 us
    an event in cache misses). Up to MAX identities (about 40 MB); past them the earliest
    seconds met are forgotten: a duplicate is found while its first copy is among the last
    ~400,000 to 524,288 events with an identity (a whole export of Tetragon's default
    rotation, 10 MB x 5 backups, is far fewer); an older one is recorded again."""

    MAX: Final = 1 << 19

    def __init__(self) -> None:
        self._seconds: dict[str, set[int]] = {}
        self._count = 0

    def repeats(self, identities: list[int | None], times: list[str]) -> list[int]:
        """The indexes of the identities seen before (in this list too); the others added.
        `times`: each one's observed_at."""
        seconds = self._seconds
        found = []
        second = ""
        bucket: set[int] = set()
        added = 0
        for index, identity in enumerate(identities):
            if identity is None:
                continue
            stamp = times[index][:19]
            if stamp != second:
                second = stamp
                bucket = seconds.setdefault(stamp, set())
            if identity in bucket:
                found.append(index)
            else:
                bucket.add(identity)
                added += 1
        self._count += added
        if self._count > self.MAX:  # the seconds met first go (dicts keep insertion order)
            while self._count > self.MAX * 3 // 4:
                self._count -= len(seconds.pop(next(iter(seconds))))
        return found

    def seen(self, identity: int, observed_at: str) -> bool:
        bucket = self._seconds.get(observed_at[:19])
        return bucket is not None and identity in bucket


@dataclass
class TetragonIngestResult:
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


@dataclass(frozen=True)
class _IngestFields:
    chain_id: str
    chain_dir: str
    lines: int
    records: int
    chunks: int
    node_name: str | None
    dropped: dict[str, int]
    redacted: dict[str, int]
    upstream_dropped: int
    problems: list[str]


DISABLED: Final = {"enabled": False, "records": 0}


@dataclass(frozen=True)
class BridgeIngest:
    """What `tetragon ingest` prints: the chain it wrote, or that the bridge is disabled."""

    result: TetragonIngestResult | None  # None: tetragon.enabled false, nothing read or written

    def to_dict(self) -> dict[str, Any]:
        return dict(DISABLED) if self.result is None else self.result.to_dict()

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> BridgeIngest:
        if data == DISABLED:
            return cls(None)
        values = read_flat(_IngestFields, data, source, "ingest")
        return cls(
            TetragonIngestResult(
                values["chain_id"],
                Path(values["chain_dir"]),
                values["lines"],
                values["records"],
                values["chunks"],
                values["node_name"],
                Counter(values["dropped"]),
                Counter(values["redacted"]),
                values["upstream_dropped"],
                list(values["problems"]),
            )
        )


def duplicate_reason(identity: int) -> str:
    """Why an event read before is not recorded again: `<kind>:duplicate`."""
    return f"{identity_kind(identity)}:duplicate"


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
        self.result = TetragonIngestResult(chain_id, evidence_dir / chain_id, node_name=node_name)
        self._writer: ChunkWriter | None = None
        self._reported_redactions: Counter[str] = Counter()
        self._reported_upstream = 0
        self._gathered: _Gathered = _NOT_GATHERING
        self._seen = SeenEvents()

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

    def feed(self, lines: Iterable[Line], *, final: bool = True) -> None:
        """`feed_blocks` for lines one at a time (a follower, stdin, the API)."""
        self.feed_blocks(((line[0], line[1], [line[2]]) for line in lines), final=final)

    def feed_blocks(
        self, blocks: Iterable[LineBlock], *, final: bool = True, live: bool = False
    ) -> None:
        """The hot loop: `process_uprobe` lines through the typed fast path
        (`EventMapper.map_uprobe_run`), their records handed to the writer in runs; the rest
        parsed with orjson and mapped one by one (`_line`), a pretty-printed object (`{` alone
        on a line, as Tetragon's documentation shows events) gathered up to its closing `}` at
        column 0.

        `final=False`: more lines follow in a later call (tetragon/parallel.py feeds blocks):
        an object still open at the end is kept for it (`gathering`), and the counts are not
        yet moved into the chain (`finish` does both).

        `live`: an input that may run for days (a follower, standard input): the redaction
        counts are moved into the open chunk every ACCOUNT_EVERY lines, as for the gRPC
        stream, not only at its end (a crash before would lose them)."""
        mapper = self.mapper
        next_account = self.result.lines + ACCOUNT_EVERY if live else -1
        map_run = mapper.map_uprobe_run
        run: list[str] = []  # canonical lines (text) of fast-path records not yet handed over
        times: list[str] = []  # and their observed_at
        identities: list[int | None] = []  # and their events' identities
        # The run's lines are consecutive (it is handed over before any other line is taken):
        # its first line's source and number name each of them.
        source, run_first = "", 0
        general = self._line
        try:
            for source, first, parts in blocks:
                index, count = 0, len(parts)
                while index < count:
                    mapped = None
                    if self._writer is not None and self._gathered[0] is None:
                        if not run:
                            run_first = first + index
                        index = map_run(parts, index, run, times, identities)
                        if index == count:
                            break
                        mapped = mapper.declined
                    if run:  # in input order: the run first
                        self._hand_over(run, times, identities, source, run_first)
                    general(
                        Line(source, first + index, parts[index]),
                        mapped,
                        mapper.declined_identity if mapped is not None else None,
                    )
                    index += 1
                if run:  # a block's worth at a time: memory stays bounded
                    self._hand_over(run, times, identities, source, run_first)
                if 0 <= next_account <= self.result.lines:
                    self._account()
                    next_account = self.result.lines + ACCOUNT_EVERY
        finally:
            if run:  # also when the input fails: what was read before is written
                self._hand_over(run, times, identities, source, run_first)
        if final:
            self.finish()

    def _hand_over(
        self,
        run: list[str],
        times: list[str],
        identities: list[int | None],
        source: str,
        first: int,
    ) -> None:
        """A run of fast-path records (of the lines numbered from `first` in `source`) to the
        writer in one call; the lists emptied."""
        count = len(times)
        self.result.lines += count
        self.result.records += count
        numbers = range(first, first + count)
        if count == 1:  # lines fed one at a time (a follower)
            kept = [identities.pop()]
            repeated = self._append_run(
                run.pop().encode(), times.pop(), 1, "", "", kept, source, numbers
            )
        else:
            lines, observed = "\n".join(run).encode(), "\n".join(times)
            earliest, latest = min(times), max(times)
            kept = identities[:]
            run.clear()
            times.clear()
            identities.clear()
            repeated = self._append_run(
                lines, observed, count, earliest, latest, kept, source, numbers
            )
        for index in repeated:
            identity = cast(int, kept[index])  # a duplicate has an identity
            self._problem(Line(source, first + index, None), duplicate_reason(identity))

    # --- duplicates: dropped and counted where the writer is called (in this process, or on
    # replay of a worker's calls: tetragon/parallel.py), so both ways drop the same events.

    def _append_run(
        self,
        lines: bytes,
        observed: str,
        count: int,
        earliest: str,
        latest: str,
        identities: list[int | None],
        source: str,
        numbers: Sequence[int],
    ) -> list[int]:
        """Encoded records (lines and observed_at values joined by newlines; of the lines
        `numbers` of `source`) to the writer, an event seen before (`SeenEvents`) dropped and
        counted; `result.records` counted them. Returns the indexes of the dropped ones, for
        the caller to name (a worker's lines are numbered by the parent: parallel.py)."""
        writer = cast(ChunkWriter, self._writer)
        repeated = self._seen.repeats(identities, observed.split("\n") if count > 1 else [observed])
        if not repeated:
            if count == 1:
                writer.append_encoded(lines, observed)
            else:
                writer.append_encoded_run(lines, observed, count, earliest, latest)
            return repeated
        # Cut around each repeated event: its count lands in the chunk it would have gone to.
        parts, stamps = lines.split(b"\n"), observed.split("\n")
        start = 0
        for index in [*repeated, count]:
            if index > start:
                piece = stamps[start:index]
                writer.append_encoded_run(
                    b"\n".join(parts[start:index]),
                    "\n".join(piece),
                    len(piece),
                    min(piece),
                    max(piece),
                )
            if index < count:
                self._repeated(cast(int, identities[index]))
            start = index + 1
        return repeated

    def _append_record(self, record: dict[str, Any], identity: int | None, line: Line) -> bool:
        """One record (of `line`) to the writer (ObservationError if the encoder refuses it),
        unless its event was seen before: then False, for the caller to name `line`;
        `result.records` counts it."""
        if identity is not None and self._seen.seen(identity, record["observed_at"]):
            self._repeated(identity)
            return False
        cast(ChunkWriter, self._writer).append(record)
        if identity is not None:  # only once recorded: a refused record is no first copy
            self._seen.repeats([identity], [record["observed_at"]])
        return True

    def _repeated(self, identity: int) -> None:
        """An event read before (an export concatenated, a stream replayed): not recorded
        again, counted as dropped (`<kind>:duplicate`) in the result and the chunk's loss (its
        line is named by the caller)."""
        reason = duplicate_reason(identity)
        self.result.records -= 1
        self.result.dropped[reason] += 1
        cast(ChunkWriter, self._writer).add_loss(filtered_out=1, by_reason={f"dropped.{reason}": 1})

    def _line(
        self,
        line: Line,
        mapped: tuple[bytes, str] | dict[str, Any] | None,
        identity: int | None = None,
    ) -> None:
        """One line the fast path did not record; `mapped`: the record it built instead (its
        event's identity: `identity`)."""
        result = self.result
        if mapped is not None:  # arguments kept, or a record the encoder may refuse
            result.lines += 1
            result.records += 1
            try:
                if not self._append_record(cast(dict[str, Any], mapped), identity, line):
                    self._problem(line, duplicate_reason(cast(int, identity)))
            except ObservationError:
                result.records -= 1
                self._refuse(line, "process_uprobe:invalid_record")
            return
        data = line[2]
        gathered, gathered_at, gathered_size = self._gathered
        if gathered is not None:
            if data is None or gathered_size + len(data) > self.max_object_bytes:
                self._gathered = _NOT_GATHERING
                self._refuse(gathered_at, "line:too_long")
                return
            gathered.append(data)
            self._gathered = (gathered, gathered_at, gathered_size + len(data) + 1)
            if data.rstrip() == b"}":
                self._gathered = _NOT_GATHERING
                try:
                    event = orjson.loads(b"\n".join(gathered))
                except orjson.JSONDecodeError:
                    self._refuse(gathered_at, "line:malformed_json")
                else:
                    self._event(gathered_at, event)
            return
        if data is not None and (not data or data.isspace()):
            return  # a blank line is no event (and orjson's error for it is slow)
        result.lines += 1
        if data is None:
            self._refuse(line, "line:too_long")
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            stripped = data.strip()
            if not stripped:
                result.lines -= 1
            elif stripped == b"{":
                self._gathered = ([data], line, len(data) + 1)
            else:
                self._refuse(line, "line:malformed_json")
            return
        self._event(line, event)

    @property
    def gathering(self) -> bool:
        """Inside a pretty-printed object whose closing `}` has not come yet."""
        return self._gathered[0] is not None

    def finish(self) -> None:
        """The end of the input: an object left open refused, counts into the chain."""
        gathered, gathered_at, _ = self._gathered
        if gathered is not None:
            self._gathered = _NOT_GATHERING
            self._refuse(gathered_at, "line:malformed_json")  # the input ended inside it
        self._account()

    def feed_events(self, events: Iterable[dict[str, Any] | Undecodable], source: str) -> None:
        """Already-parsed events (the gRPC stream), numbered as they arrive; a message that
        could not be decoded refused by its number (`message:undecodable`)."""
        for number, event in enumerate(events, start=1):
            self.result.lines += 1
            if type(event) is Undecodable:
                self._refuse(Line(source, number, None), "message:undecodable")
            else:
                self._event(Line(source, number, None), event)
            if number % ACCOUNT_EVERY == 0:
                self._account()
        self._account()

    def _event(self, line: Line, event: Any) -> None:
        """One parsed event: mapped and appended, or refused with its reason."""
        if self._writer is None:
            self._open(node_name_of(event))
        mapped = self.mapper.map(event)
        if self.mapper.upstream_dropped != self._reported_upstream:
            # Tetragon's own drops (rate_limit_info) into the chunk open when they were told,
            # at once: a chunk sealed after says so, and a crash does not lose them.
            upstream = self.mapper.upstream_dropped - self._reported_upstream
            self._reported_upstream = self.mapper.upstream_dropped
            (self._writer or self._open(None)).add_loss(ring_buffer_dropped=upstream)
        if isinstance(mapped, str):
            self._refuse(line, mapped)
            return
        self.result.records += 1
        try:
            identity = event_identity(self.mapper.event)  # camelCase or not, one identity
            if not self._append_record(mapped, identity, line):
                self._problem(line, duplicate_reason(cast(int, identity)))
        except ObservationError:  # a value the record format refuses (e.g. a NUL in a path)
            self.result.records -= 1
            self._refuse(line, f"{self.mapper.kind_of(self.mapper.event)}:invalid_record")

    def note_gap(self, reason: str) -> None:
        """Lines may have been missed (how many is unknown): said in the seal, by reason."""
        self.result.dropped[reason] += 1
        writer = self._writer or self._open(None)
        writer.add_loss(by_reason={f"gap.{reason}": 1})

    def _refuse(self, line: Line, reason: str) -> None:
        self.result.dropped[reason] += 1
        self._problem(line, reason)
        writer = self._writer or self._open(None)
        reasons = {f"dropped.{reason}": 1}
        if reason == THROTTLE_START:  # and Tetragon sends the cgroup's events no more
            reasons[GAP_THROTTLED] = 1
        writer.add_loss(filtered_out=1, by_reason=reasons)

    def _problem(self, line: Line, reason: str) -> None:
        """A line not recorded, named in the result (the first MAX_NAMED_PROBLEMS)."""
        problems = self.result.problems
        if len(problems) < MAX_NAMED_PROBLEMS:
            problems.append(self._name(line, reason))

    def _name(self, line: Line, reason: str) -> str:
        """How a refused line is named (a mapping worker keeps the parts: its line numbers
        count from its block's start, tetragon/parallel.py)."""
        return f"{line.source}:{line.number}: {reason}"

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

    def close(self) -> TetragonIngestResult:
        self._account()
        writer = self._writer or self._open(None)
        writer.close(final=True)
        self.result.chunks = writer.sealed_chunks
        self.result.redacted = Counter(dict(self.mapper.counts))
        self.result.upstream_dropped = self.mapper.upstream_dropped
        return self.result
