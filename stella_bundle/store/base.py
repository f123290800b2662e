"""The observation store interface (DESIGN.md §8): what every backend offers, and its types.

A backend implements the abstract methods of `ObservationStore`: schema migrations, atomic
idempotent ingest of chunks, ordered record reads over a time window, per-node aggregation
(the coverage question, answered by the database), retention, and storage of function maps
and verification reports. Everything above that (verifying chains before ingest, the query
filters, the verdict) lives once in `store.ingest` and `store.coverage`, shared by every
backend, so the backends cannot disagree about what a record means.

Times crossing this interface are canonical strings (`2026-01-23T00:00:00.000000Z`): they
order the same as the instants they name, and the file-based path uses the same strings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, NamedTuple, Protocol, Self

import orjson

from ..errors import EvidenceChainError, InputError

SCHEMA_VERSION_KEY: Final = "schema_version"


class StoreError(InputError):
    """The store cannot do what was asked (bad URL, schema too old or too new); exit 2."""


class StoreUnavailableError(StoreError):
    """The store's server or file cannot be reached or failed mid-operation; exit 2.

    Every write is one transaction: when this is raised, nothing of the operation was kept.
    """


class ChunkConflictError(EvidenceChainError):
    """A chunk's (chain, sequence) is stored already with a different seal; exit 1."""


@dataclass(frozen=True)
class Provenance:
    """Where a stored record comes from: the signed evidence that carries it.

    `seal_sha256` is the sha256 of the seal file's bytes (what the next seal links to);
    `collector_key_ids` are the trusted keys that verified the seal. For unsealed NDJSON
    input, `chain_id` is `ndjson-<sha256 prefix>`, `seal_sha256` is the file's sha256 and
    `signed` is False (no key vouches for those records).
    """

    chain_id: str
    sequence: int
    seal_sha256: str
    collector_key_ids: tuple[str, ...] = ()
    signed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "sequence": self.sequence,
            "seal_sha256": self.seal_sha256,
            "collector_key_ids": list(self.collector_key_ids),
            "signed": self.signed,
        }


# The columns of the observations table, in insert (and COPY) order.
COLUMNS: Final = (
    "chain_id",
    "sequence",
    "line",
    "observed_at",
    "obs_start",
    "obs_end",
    "node_hash",
    "function_name",
    "probe_type",
    "count",
    "purl",
    "record",
)


class Row(NamedTuple):
    """One stored record: the columns the database filters and aggregates on (times
    canonical), and the record's JSON text as stored."""

    chain_id: str
    sequence: int
    line: int
    observed_at: str
    obs_start: str  # first_observed_at or observed_at: where the record's interval starts
    obs_end: str  # last_observed_at or observed_at
    node_hash: str
    function_name: str
    probe_type: str
    event_count: int  # the "count" column
    purl: str | None
    record: str


class PreparedRows(Protocol):
    """Rows a fast reader decoded already (`store.rows.DecodedChunk`)."""

    def __len__(self) -> int: ...

    def rows(self) -> Iterable[Row]: ...


@dataclass(frozen=True)
class StoreChunk:
    """One chunk to store: its provenance, its validated records in line order, and the seal.

    `prepared`: the chunk as a fast reader decoded it (`store.rows.fast_decode`); when given,
    `records` is not used.
    """

    provenance: Provenance
    records: Sequence[dict[str, Any]] = ()
    seal: bytes | None = None  # the seal file (DSSE envelope) bytes, kept for re-verification
    prepared: PreparedRows | None = None

    @property
    def size(self) -> int:
        return len(self.prepared) if self.prepared is not None else len(self.records)


@dataclass(frozen=True)
class ChunkConflict:
    chain_id: str
    sequence: int
    stored_seal_sha256: str
    offered_seal_sha256: str

    def describe(self) -> str:
        return (
            f"chain {self.chain_id} sequence {self.sequence}: stored with seal sha256:"
            f"{self.stored_seal_sha256}, offered with seal sha256:{self.offered_seal_sha256}; "
            "refused"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class IngestResult:
    """What an ingest did. With conflicts, nothing of the batch was stored."""

    chunks_stored: int = 0
    chunks_already_stored: int = 0
    records_stored: int = 0
    records_dropped: int = 0  # memory backend only: over its bound, counted, never silent
    conflicts: list[ChunkConflict] = field(default_factory=list)
    chains: list[dict[str, Any]] = field(default_factory=list)  # chain verification summaries

    def merge(self, other: IngestResult) -> None:
        self.chunks_stored += other.chunks_stored
        self.chunks_already_stored += other.chunks_already_stored
        self.records_stored += other.records_stored
        self.records_dropped += other.records_dropped
        self.conflicts += other.conflicts
        self.chains += other.chains

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunks_stored": self.chunks_stored,
            "chunks_already_stored": self.chunks_already_stored,
            "records_stored": self.records_stored,
            "records_dropped": self.records_dropped,
            "conflicts": [c.to_dict() for c in self.conflicts],
            "chains": self.chains,
        }


@dataclass(frozen=True)
class NodeRow:
    """The database's answer for one node_hash over a window (see `store.coverage`).

    `function_name`/`purl` are those of the node's first record in store order (chain id,
    sequence, line), the record the file-based aggregator would meet first.
    """

    node_hash: str
    count: int
    first: str
    last: str
    probe_types: tuple[str, ...]
    function_name: str
    purl: str | None


@dataclass(frozen=True)
class NodeAggregation:
    rows: list[NodeRow]
    records_total: int  # every stored record ("read" in the report)
    records_in_window: int


@dataclass(frozen=True)
class DroppedPartition:
    name: str
    day: str  # YYYY-MM-DD
    records: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PruneResult:
    """Records older than `cutoff` removed. PostgreSQL drops whole day partitions (listed);
    the other backends delete the same days' rows, so all answer alike."""

    cutoff: str
    records_removed: int = 0
    partitions_dropped: list[DroppedPartition] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff,
            "records_removed": self.records_removed,
            "partitions_dropped": [p.to_dict() for p in self.partitions_dropped],
        }


@dataclass(frozen=True)
class StoredFunctionMap:
    digest: str  # sha256:<hex> of the Statement bytes (LoadedFunctionMap.digest)
    service: str
    statement: bytes
    envelope: bytes | None  # the DSSE envelope as posted, when signed
    signed: bool
    signature_checked: bool
    signers: tuple[str, ...]
    stored_at: str

    def summary(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "service": self.service,
            "signed": self.signed,
            "signature_checked": self.signature_checked,
            "signers": list(self.signers),
            "stored_at": self.stored_at,
        }


def upgrades(incoming: StoredFunctionMap, stored: StoredFunctionMap) -> bool:
    """Whether `incoming` replaces `stored` (same digest): only a checked signature replaces a
    copy without one. The SQL backends state the same rule in their conditional upsert."""
    return incoming.signature_checked and not stored.signature_checked


def encode_report(report: dict[str, Any]) -> bytes:
    """A verification report as the stores keep it: compact JSON, keys in the report's own
    order (sorting them cost half as much again). The API answers these same bytes, so a
    report is serialised once."""
    return orjson.dumps(report)


@dataclass(frozen=True)
class StoredReport:
    id: int
    function_map_digest: str
    created_at: str
    window_from: str | None
    window_to: str | None
    verified: bool
    report: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "function_map_digest": self.function_map_digest,
            "created_at": self.created_at,
            "window_from": self.window_from,
            "window_to": self.window_to,
            "verified": self.verified,
        }


@dataclass
class StoreStatus:
    url: str  # password hidden
    backend: str
    schema_version: int  # 0: not initialised
    latest_version: int
    records: int = 0
    chunks: int = 0
    chains: int = 0
    function_maps: int = 0
    reports: int = 0
    first_observed_at: str | None = None
    last_observed_at: str | None = None
    partitions: list[str] = field(default_factory=list)  # PostgreSQL: day partitions
    records_dropped: int = 0  # memory backend: over its bound since it was created
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> list[int]:
        return list(range(self.schema_version + 1, self.latest_version + 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "backend": self.backend,
            "schema_version": self.schema_version,
            "latest_version": self.latest_version,
            "pending_migrations": self.pending,
            "records": self.records,
            "chunks": self.chunks,
            "chains": self.chains,
            "function_maps": self.function_maps,
            "reports": self.reports,
            "first_observed_at": self.first_observed_at,
            "last_observed_at": self.last_observed_at,
            "partitions": self.partitions,
            "records_dropped": self.records_dropped,
            **self.details,
        }


@dataclass(frozen=True)
class StoredRecord:
    record: dict[str, Any]
    chain_id: str
    sequence: int
    line: int


class ObservationStore(ABC):
    """One observation store. Not shared between threads: open one per thread (cheap).

    Every write method is a single transaction: it happens whole or not at all.
    """

    backend: str = ""

    def __init__(self, url: str, display_url: str) -> None:
        self.url = url
        self.display_url = display_url  # for messages: never shows a password

    # --- lifecycle --------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    def reusable(self) -> bool:
        """Whether this open store may serve another request (the API keeps a few open):
        still the store its URL names, its connection sound and idle, nothing cached from
        the last use. Called between uses, never during one; False: close it, open anew."""
        return False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- schema -----------------------------------------------------------------------------

    @abstractmethod
    def schema_version(self) -> int:
        """The applied schema version (0: not initialised)."""

    @abstractmethod
    def latest_version(self) -> int: ...

    @abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending migrations in order; the versions applied. No other run sees a
        version between two of them (PostgreSQL: under `migration_lock`; SQLite: one
        transaction)."""

    def migration_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a schema is read and migrated: `store init` deciding between "new",
        "current" and "older" must not read another run's half-done migration."""
        return contextlib.nullcontext()

    def foreign_tables(self) -> list[str]:
        """Tables of a store without a schema_migrations table (another program's database);
        the SQL backends list them."""
        return []

    def check_migratable(self) -> None:
        """Refuse to write this stella's schema where it does not belong: into another
        program's database (tables, none of them ours), or over a newer schema."""
        current, latest = self.schema_version(), self.latest_version()
        if current > latest:
            raise StoreError(
                f"store {self.display_url} has schema version {current}, newer than this "
                f"stella knows ({latest}); upgrade stella"
            )
        if current == 0:
            foreign = self.foreign_tables()
            if foreign:
                more = f" (and {len(foreign) - 5} more)" if len(foreign) > 5 else ""
                shown = ", ".join(foreign[:5]) + more
                raise StoreError(
                    f"store {self.display_url} is not a stella store: it holds tables "
                    f"{shown} and no schema_migrations; nothing written (give a new file or "
                    "an empty database)"
                )

    def require_schema(self) -> None:
        """Refuse to work on a store whose schema is not the one this code writes."""
        current, latest = self.schema_version(), self.latest_version()
        if current == 0:
            raise StoreError(
                f"store {self.display_url} is not initialised; run `stella store init --store URL`"
            )
        if current < latest:
            raise StoreError(
                f"store {self.display_url} has schema version {current}, this stella needs "
                f"{latest}; run `stella store migrate --store URL`"
            )
        if current > latest:
            raise StoreError(
                f"store {self.display_url} has schema version {current}, newer than this "
                f"stella knows ({latest}); upgrade stella"
            )

    @abstractmethod
    def status(self) -> StoreStatus: ...

    # --- evidence ---------------------------------------------------------------------------

    @abstractmethod
    def stored_seals(self, chain_id: str) -> dict[int, str]:
        """sequence → seal sha256 of the chunks of `chain_id` already stored."""

    def prepare_days(self, days: Iterable[dt.date]) -> None:
        """A hint before `store_chunks`: records of these UTC days are coming (PostgreSQL makes
        their partitions in short transactions of their own). Nothing to do elsewhere."""
        return None

    @abstractmethod
    def store_chunks(self, chunks: Iterable[StoreChunk]) -> IngestResult:
        """Store chunks in one transaction, idempotently per (chain, sequence).

        A chunk already stored with the same seal sha256 adds nothing; one stored with a
        different seal sha256 is a conflict: the result lists it and nothing is stored.
        Callers verify first (`store.ingest`); this method trusts its input.
        """

    @abstractmethod
    def iter_records(
        self, window_from: str | None = None, window_to: str | None = None
    ) -> Iterator[StoredRecord]:
        """Records in store order (chain id, sequence, line) overlapping the window: a
        record's [first_observed_at or observed_at, last_observed_at or observed_at] meets
        [window_from, window_to] (the file-based query's and verifier's rule)."""

    @abstractmethod
    def aggregate_nodes(
        self,
        window_from: str | None = None,
        window_to: str | None = None,
        expected: Collection[str] = (),
    ) -> NodeAggregation:
        """Per node_hash over the window, computed by the database. Rows of nodes not in
        `expected` carry the name and purl of their first record (store order); the others
        carry an empty name (the map names them)."""

    @abstractmethod
    def provenance(self, chain_id: str, sequence: int) -> Provenance | None: ...

    @abstractmethod
    def seal_bytes(self, chain_id: str, sequence: int) -> bytes | None: ...

    @abstractmethod
    def prune(self, cutoff: dt.datetime) -> PruneResult:
        """Remove records of whole UTC days ending at or before `cutoff`'s day start.

        Chunk rows (provenance and the seals) are kept: a pruned chunk offered again adds
        nothing, so retention never lets old evidence back in.
        """

    # --- function maps and reports ----------------------------------------------------------

    @abstractmethod
    def put_function_map(self, function_map: StoredFunctionMap) -> bool:
        """Store by digest; True when the store changed.

        A digest stored already changes only by an upgrade: a copy whose signature was checked
        replaces one without a checked signature (envelope, signed, checked, signers; the
        Statement is the same bytes and `stored_at` stays the first). Otherwise nothing changes
        and the answer is False: no downgrade to an unsigned copy, and of two checked envelopes
        the first stays (see `upgrades`).
        """

    @abstractmethod
    def get_function_map(self, digest: str) -> StoredFunctionMap | None: ...

    def signature_checked(self, digest: str) -> bool | None:
        """Whether the map stored under `digest` has a checked signature (None: no such map):
        the one thing about a stored map that can change (`upgrades`)."""
        stored = self.get_function_map(digest)
        return None if stored is None else stored.signature_checked

    @abstractmethod
    def list_function_maps(self) -> list[StoredFunctionMap]: ...

    @abstractmethod
    def put_report(
        self,
        function_map_digest: str,
        window_from: str | None,
        window_to: str | None,
        verified: bool,
        report: dict[str, Any],
        *,
        encoded: bytes | None = None,
    ) -> StoredReport:
        """Store a report; `encoded`: `encode_report(report)` when the caller has it already."""

    @abstractmethod
    def get_report(self, report_id: int) -> StoredReport | None: ...

    @abstractmethod
    def list_reports(self, function_map_digest: str | None = None) -> list[StoredReport]: ...
