"""The embedded default store: one SQLite file, WAL mode, no server.

Times are canonical strings (fixed width, so text order is time order); the coverage question
is one GROUP BY over the window. Records are kept as canonical JSON beside the columns the
database filters on, and come back exactly as they were ingested.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import os
import sqlite3
import stat
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from functools import reduce
from pathlib import Path
from typing import Any, Final

import zstandard

from ..timeutil import format_timestamp, utc_now
from .base import (
    ChunkConflict,
    IngestResult,
    NodeAggregation,
    ObservationStore,
    Provenance,
    PruneResult,
    StoreChunk,
    StoredFunctionMap,
    StoredRecord,
    StoredReport,
    StoreError,
    StoreStatus,
    StoreUnavailableError,
    encode_report,
)
from .migrations import Migration, check_sequence
from .rollups import (
    FINE_BUCKET_COLUMNS,
    FINE_CHARS,
    FINE_SUFFIX,
    ROLLUP_COLUMNS,
    ROW_MASK_SQL,
    STORED_PROBE_ORDER,
    Fold,
    Rollups,
    bucket_ranges,
    clip,
    combine,
    fine_plan,
    shifted,
    window_class,
)
from .rows import (
    COLUMNS,
    function_map_from_row,
    join_key_ids,
    key_ids,
    load_record,
    row_values,
)

# Bit i of a probe mask from a row's probe_type, and the OR of masks over a group (SQLite has
# no bit_or aggregate; the probe types are few).
_RAW_MASK = " | ".join(f"((probe_type = '{p}') << {i})" for i, p in enumerate(STORED_PROBE_ORDER))
_MASK_OR = " | ".join(f"max(probe_mask & {1 << i})" for i in range(len(STORED_PROBE_ORDER)))
_FIRST = ("first_chain", "first_sequence", "first_line", "function_name", "purl")
# Ingest folds each new chunk's rollup rows into the stored ones (rollups.py).
_UPSERT_ROLLUP = (
    f"INSERT INTO {{table}} ({', '.join(ROLLUP_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(ROLLUP_COLUMNS))}) "
    "ON CONFLICT (bucket, node_hash) DO UPDATE SET "
    "records = records + excluded.records, events = events + excluded.events, "
    "min_start = min(min_start, excluded.min_start), "
    "max_start = max(max_start, excluded.max_start), "
    "min_end = min(min_end, excluded.min_end), max_end = max(max_end, excluded.max_end), "
    "probe_mask = probe_mask | excluded.probe_mask, "
    + ", ".join(
        f"{column} = CASE WHEN (excluded.first_chain, excluded.first_sequence, "
        "excluded.first_line) < (first_chain, first_sequence, first_line) "
        f"THEN excluded.{column} ELSE {column} END"
        for column in _FIRST
    )
)
_UPSERT_DAYS: Final = _UPSERT_ROLLUP.replace("{table}", "node_rollups")
_UPSERT_FINE: Final = _UPSERT_ROLLUP.replace("{table}", "fine_rollups")
_UPSERT_BUCKET: Final = (
    f"INSERT INTO fine_buckets ({', '.join(FINE_BUCKET_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(FINE_BUCKET_COLUMNS))}) "
    "ON CONFLICT (bucket) DO UPDATE SET "
    "min_start = min(min_start, excluded.min_start), "
    "max_start = max(max_start, excluded.max_start), "
    "min_end = min(min_end, excluded.min_end), max_end = max(max_end, excluded.max_end), "
    "raw = max(raw, excluded.raw)"
)


def _rollup_table(name: str) -> str:
    """The rollup tables' one shape (per day and per ten minutes); the text is each migration's
    as first published."""
    return f"""CREATE TABLE {name} (
                bucket TEXT NOT NULL,
                node_hash TEXT NOT NULL,
                records INTEGER NOT NULL,
                events INTEGER NOT NULL,
                min_start TEXT NOT NULL,
                max_start TEXT NOT NULL,
                min_end TEXT NOT NULL,
                max_end TEXT NOT NULL,
                probe_mask INTEGER NOT NULL,
                first_chain TEXT NOT NULL,
                first_sequence INTEGER NOT NULL,
                first_line INTEGER NOT NULL,
                function_name TEXT NOT NULL,
                purl TEXT,
                PRIMARY KEY (bucket, node_hash)
            ) WITHOUT ROWID"""


def _rollup_insert(
    chars: int, suffix: str, table: str = "node_rollups", mask: str = _RAW_MASK
) -> str:
    """The rows already stored rolled up as ingest does, per (bucket, node): the bucket is the
    first `chars` characters of observed_at + `suffix`; the first record of each in store
    order names it."""
    return f"""INSERT INTO {table}
        SELECT bucket, node_hash, count(*), sum(count), min(obs_start), max(obs_start),
            min(obs_end), max(obs_end), {_MASK_OR.replace("probe_mask", "mask")},
            max(CASE WHEN rn = 1 THEN chain_id END),
            max(CASE WHEN rn = 1 THEN sequence END),
            max(CASE WHEN rn = 1 THEN line END),
            max(CASE WHEN rn = 1 THEN function_name END),
            max(CASE WHEN rn = 1 THEN purl END)
        FROM (SELECT *, substr(observed_at, 1, {chars}) || '{suffix}' AS bucket,
                {mask} AS mask,
                row_number() OVER (PARTITION BY substr(observed_at, 1, {chars}), node_hash
                    ORDER BY chain_id, sequence, line) AS rn
            FROM observations)
        GROUP BY bucket, node_hash"""


MIGRATIONS: Final = (
    Migration(
        1,
        "chunks with provenance, observations, function maps, verification reports",
        (
            """CREATE TABLE chunks (
                chain_id TEXT NOT NULL,
                sequence INTEGER NOT NULL,
                seal_sha256 TEXT NOT NULL,
                collector_key_ids TEXT NOT NULL DEFAULT '',
                signed INTEGER NOT NULL,
                records INTEGER NOT NULL,
                seal BLOB,
                ingested_at TEXT NOT NULL,
                PRIMARY KEY (chain_id, sequence)
            )""",
            """CREATE TABLE observations (
                chain_id TEXT NOT NULL,
                sequence INTEGER NOT NULL,
                line INTEGER NOT NULL,
                observed_at TEXT NOT NULL,
                obs_start TEXT NOT NULL,
                obs_end TEXT NOT NULL,
                node_hash TEXT NOT NULL,
                function_name TEXT NOT NULL,
                probe_type TEXT NOT NULL,
                count INTEGER NOT NULL,
                purl TEXT,
                record TEXT NOT NULL,
                PRIMARY KEY (chain_id, sequence, line)
            )""",
            "CREATE INDEX observations_observed_at ON observations (observed_at)",
            """CREATE TABLE function_maps (
                digest TEXT PRIMARY KEY,
                service TEXT NOT NULL,
                statement BLOB NOT NULL,
                envelope BLOB,
                signed INTEGER NOT NULL,
                signature_checked INTEGER NOT NULL,
                signers TEXT NOT NULL DEFAULT '',
                stored_at TEXT NOT NULL
            )""",
            """CREATE TABLE verification_reports (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                function_map_digest TEXT NOT NULL,
                created_at TEXT NOT NULL,
                window_from TEXT,
                window_to TEXT,
                verified INTEGER NOT NULL,
                report TEXT NOT NULL
            )""",
            "CREATE INDEX verification_reports_map ON verification_reports (function_map_digest)",
        ),
    ),
    Migration(
        2,
        "a covering index for the coverage aggregation",
        (
            # verify --store groups by node over (probe type, start, end, count): read from
            # this index in node order, not from the rows (which hold each record's text:
            # three times the bytes) and without sorting them; the names of nodes outside a map
            # are looked up by node through it too.
            "CREATE INDEX observations_coverage ON observations "
            "(node_hash, probe_type, obs_start, obs_end, count)",
        ),
    ),
    Migration(
        3,
        "per-node hourly rollups for the coverage question (rollups.py)",
        (
            _rollup_table("node_rollups"),
            _rollup_insert(13, ":00:00.000000Z"),
            # The rollups answer what this index served; ingest no longer pays for it.
            "DROP INDEX observations_coverage",
            # How far a record's interval reaches around its observed_at: the raw rows of a
            # ragged hour are read only where they can meet the window. From the stored rows
            # through julianday (a double: ~50 µs of error), so one second is added.
            """CREATE TABLE span_bounds (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                before_us INTEGER NOT NULL,
                after_us INTEGER NOT NULL
            )""",
            """INSERT INTO span_bounds SELECT 1,
                coalesce((SELECT max(CAST((julianday(observed_at) - julianday(obs_start))
                    * 86400000000 AS INTEGER)) + 1000000 FROM observations
                    WHERE obs_start <> observed_at), 0),
                coalesce((SELECT max(CAST((julianday(obs_end) - julianday(observed_at))
                    * 86400000000 AS INTEGER)) + 1000000 FROM observations
                    WHERE obs_end <> observed_at), 0)""",
        ),
    ),
    Migration(
        4,
        "rollups per day instead of per hour (rollups.py says why)",
        ("DELETE FROM node_rollups", _rollup_insert(10, "T00:00:00.000000Z")),
    ),
    Migration(
        5,
        "ten-minute rollups and bucket bounds for the days a window cuts (rollups.py)",
        (
            _rollup_table("fine_rollups"),
            """CREATE TABLE fine_buckets (
                bucket TEXT PRIMARY KEY,
                min_start TEXT NOT NULL,
                max_start TEXT NOT NULL,
                min_end TEXT NOT NULL,
                max_end TEXT NOT NULL,
                raw INTEGER NOT NULL
            ) WITHOUT ROWID""",
            _rollup_insert(FINE_CHARS, FINE_SUFFIX, "fine_rollups", ROW_MASK_SQL),
            f"""INSERT INTO fine_buckets
                SELECT substr(observed_at, 1, {FINE_CHARS}) || '{FINE_SUFFIX}', min(obs_start),
                    max(obs_start), min(obs_end), max(obs_end), 0
                FROM observations GROUP BY 1""",
        ),
    ),
    Migration(
        6,
        "reports stored zstd-compressed; a map's signature status read from an index",
        (
            # New reports are BLOBs (`_pack_report`); the JSON text of older rows is read as
            # before. Nothing to rewrite: the version only stops an older stella, which would
            # read a BLOB as JSON.
            #
            # The API reads an unsigned map's signature status on every verification (a checked
            # copy may have replaced it): from the row it walked the statement's overflow pages
            # (~10 for a 100-path map, read again after every other connection's write).
            "CREATE INDEX function_maps_signature ON function_maps (digest, signature_checked)",
        ),
    ),
)
LATEST: Final = check_sequence(MIGRATIONS)

_WINDOW = "(:f IS NULL OR obs_end >= :f) AND (:t IS NULL OR obs_start <= :t)"


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/path` or `sqlite:////absolute/path` (SQLAlchemy's convention)."""
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise StoreError(
            f"expected sqlite:///PATH (three slashes, then the file path), found {url!r}",
            field="--store",
        )
    path = url[len("sqlite:///") :]
    if "?" in path or "#" in path:
        # Not parameters to SQLite: they would be part of the file's name (`?mode=ro` made a
        # file named `x.sqlite?mode=ro`, writable).
        raise StoreError(
            f"a SQLite store URL takes no ?parameters or #fragment, found {url!r} (the file "
            "path is everything after sqlite:///)",
            field="--store",
        )
    return Path(path)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


# zstd level of the stored reports: a 100-path report, 53.7 kB of JSON, is 6.1 kB in 51 us
# (level 3: 6.3 kB, 75 us). Written whole into the WAL, then again into the file by each
# checkpoint, the JSON cost 13 pages (26 pwrite) per report and a checkpoint (two fdatasync)
# every 25-30 API requests.
REPORT_ZSTD_LEVEL: Final = 1


def _pack_report(encoded: bytes) -> bytes:
    return zstandard.compress(encoded, REPORT_ZSTD_LEVEL)


def unpack_report(stored: str | bytes) -> bytes:
    """The JSON of a stored report: a BLOB is compressed (schema version 6), text is JSON."""
    if isinstance(stored, str):
        return stored.encode()
    try:
        return bytes(zstandard.decompress(stored))
    except zstandard.ZstdError as exc:
        raise StoreError(f"a stored report cannot be read: {exc}") from exc


# How long a write waits for another connection's write lock (SQLite's busy handler).
BUSY_TIMEOUT_MS: Final = 30_000
_report_writers: dict[str, threading.Lock] = {}
_report_writers_lock = threading.Lock()


def _report_writer(path: Path) -> threading.Lock:
    """The lock the reports of this process take to go into the SQLite file at `path`.

    The API's verification threads each hold a store of their own, and each stores a report
    per request. When two met on SQLite's write lock, the second waited in SQLite's busy
    handler, which sleeps 1, 2, 5, 10, 15, 20, 25... ms between attempts whatever the holder
    does (one worker of `bench/api.py` slept 480 ms in 3 s, one request up to 53 ms in a row:
    the p99's tail). Waiting on this lock, a writer is woken as soon as the other is done.
    Writers in other processes still meet on SQLite's lock (rare in the bench: 8 sleeps in
    3 s against 233)."""
    key = os.path.realpath(path)
    with _report_writers_lock:
        return _report_writers.setdefault(key, threading.Lock())


def _read_only(path: Path) -> str:
    """Why SQLite may have refused to open `path`: a read-only file or directory (SQLite's
    message is "unable to open database file" or "attempt to write a readonly database")."""
    where = path if path.exists() else path.parent
    if os.access(where, os.W_OK) and os.access(path.parent, os.W_OK):
        return ""
    return (
        f" ({where} is read-only: the store's WAL mode writes {path.name}-wal and "
        f"{path.name}-shm beside it, so the file and its directory must be writable)"
    )


def _check_file(path: Path, url: str) -> None:
    """The store's path is a regular file or nothing yet (SQLite's own words for a directory,
    /dev/null or a dangling link were "unable to open database file" or "disk I/O error")."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise StoreError(
                f"store {url}: {path} is a symbolic link to {os.readlink(path)}, which does "
                "not exist",
                field="--store",
            ) from None
        return
    except OSError as exc:
        raise StoreUnavailableError(f"store {url}: {path}: {exc.strerror}") from exc
    if stat.S_ISREG(mode):
        return
    kind = "a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
    raise StoreError(
        f"store {url}: {path} is {kind}, not a SQLite file (give the file's path)",
        field="--store",
    )


class SqliteStore(ObservationStore):
    backend = "sqlite"

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        super().__init__(url, url)
        if not self.path.parent.is_dir():
            raise StoreError(
                f"store {url}: directory {self.path.parent} does not exist", field="--store"
            )
        _check_file(self.path, url)
        try:
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE … COMMIT), so a
            # write takes the lock before reading what it decides on.
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"store {url}: {exc}{_read_only(self.path)}") from exc
        # The API may call from worker threads; one statement at a time on this connection.
        self._lock = threading.RLock()
        self._identity = _file_identity(self.path)
        self._report_writer = _report_writer(self.path)

    def close(self) -> None:
        self.db.close()

    def reusable(self) -> bool:
        # The file at the path must still be the one this connection has open: a store moved
        # aside or replaced is answered as the new path says (503 when gone), not from the
        # old file.
        identity = _file_identity(self.path)
        return identity is not None and identity == self._identity and not self.db.in_transaction

    def _fail(self, exc: sqlite3.Error) -> StoreUnavailableError:
        return StoreUnavailableError(f"store {self.display_url}: {exc}{_read_only(self.path)}")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """One statement at a time on this connection; a SQLite error names the store."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise self._fail(exc) from exc

    # --- schema -----------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._guard():
            exists = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
            ).fetchone()
            if not exists:
                return 0
            row = self.db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)

    def latest_version(self) -> int:
        return LATEST

    def foreign_tables(self) -> list[str]:
        with self._guard():
            rows = self.db.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' ORDER BY name"
            ).fetchall()
        return [str(row[0]) for row in rows] if self.schema_version() == 0 else []

    def migrate(self) -> list[int]:
        self.check_migratable()
        applied: list[int] = []
        with self._guard():
            # One transaction for every pending version (SQLite's DDL is transactional): a
            # second run waits on the write lock and finds them applied; between versions in
            # transactions of their own, another `init` read version 4 of 6 and refused the
            # store as "initialised at an older version".
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
                    "KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                for migration in MIGRATIONS:
                    done = self.db.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = ?",
                        (migration.version,),
                    ).fetchone()
                    if not done:
                        for statement in migration.statements:
                            self.db.execute(statement)
                        self.db.execute(
                            "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                            (
                                migration.version,
                                migration.description,
                                format_timestamp(utc_now()),
                            ),
                        )
                        applied.append(migration.version)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return applied

    def status(self) -> StoreStatus:
        version = self.schema_version()
        status = StoreStatus(self.display_url, self.backend, version, LATEST)
        status.details["path"] = str(self.path)
        if version == 0:
            return status
        with self._guard():
            one = self.db.execute
            status.records, status.first_observed_at, status.last_observed_at = one(
                "SELECT COUNT(*), MIN(observed_at), MAX(observed_at) FROM observations"
            ).fetchone()
            status.chunks, status.chains = one(
                "SELECT COUNT(*), COUNT(DISTINCT chain_id) FROM chunks"
            ).fetchone()
            status.function_maps = one("SELECT COUNT(*) FROM function_maps").fetchone()[0]
            status.reports = one("SELECT COUNT(*) FROM verification_reports").fetchone()[0]
        return status

    # --- evidence ---------------------------------------------------------------------------

    def stored_seals(self, chain_id: str) -> dict[int, str]:
        with self._guard():
            rows = self.db.execute(
                "SELECT sequence, seal_sha256 FROM chunks WHERE chain_id = ?", (chain_id,)
            ).fetchall()
        return {int(s): str(d) for s, d in rows}

    def store_chunks(self, chunks: Iterable[StoreChunk]) -> IngestResult:
        result = IngestResult()
        rollups = Rollups()
        now = format_timestamp(utc_now())
        insert = (
            f"INSERT INTO observations ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        with self._guard():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for chunk in chunks:
                    p = chunk.provenance
                    cursor = self.db.execute(
                        "INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            p.chain_id,
                            p.sequence,
                            p.seal_sha256,
                            join_key_ids(p.collector_key_ids),
                            int(p.signed),
                            chunk.size,
                            chunk.seal,
                            now,
                        ),
                    )
                    if cursor.rowcount == 0:
                        stored = self.db.execute(
                            "SELECT seal_sha256 FROM chunks WHERE chain_id = ? AND sequence = ?",
                            (p.chain_id, p.sequence),
                        ).fetchone()[0]
                        if stored != p.seal_sha256:
                            result.conflicts.append(
                                ChunkConflict(p.chain_id, p.sequence, stored, p.seal_sha256)
                            )
                        else:
                            result.chunks_already_stored += 1
                        continue
                    self.db.executemany(insert, row_values(chunk))
                    rollups.add(chunk)
                    if rollups.full():
                        self._fold(rollups.take(final=False))
                    result.chunks_stored += 1
                    result.records_stored += chunk.size
                if result.conflicts:
                    self.db.execute("ROLLBACK")
                    return IngestResult(
                        chunks_already_stored=result.chunks_already_stored,
                        conflicts=result.conflicts,
                    )
                if rollups:
                    self._fold(rollups.take(final=True))
                if rollups.spans != (0, 0):
                    # They must cover every stored record: grown in the storing transaction.
                    self.db.execute(
                        "UPDATE span_bounds SET before_us = max(before_us, ?), "
                        "after_us = max(after_us, ?) WHERE id = 1",
                        rollups.spans,
                    )
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        return result

    def _fold(self, fold: Fold) -> None:
        self.db.executemany(_UPSERT_DAYS, fold.days)
        self.db.executemany(_UPSERT_FINE, fold.fine)
        self.db.executemany(_UPSERT_BUCKET, fold.buckets)

    def iter_records(
        self, window_from: str | None = None, window_to: str | None = None
    ) -> Iterator[StoredRecord]:
        params = {"f": window_from, "t": window_to}
        query = (
            "SELECT record, chain_id, sequence, line FROM observations WHERE "
            + _WINDOW
            + " ORDER BY chain_id, sequence, line"
        )
        with self._guard():
            cursor = self.db.cursor()
            cursor.execute(query, params)
        # Streamed in batches: a query over a large store never holds every record at once.
        while True:
            with self._guard():
                batch = cursor.fetchmany(10_000)
            if not batch:
                return
            for record, chain_id, sequence, line in batch:
                yield StoredRecord(load_record(record), chain_id, sequence, line)

    def aggregate_nodes(
        self,
        window_from: str | None = None,
        window_to: str | None = None,
        expected: Collection[str] = (),
    ) -> NodeAggregation:
        params: dict[str, Any] = {"f": window_from, "t": window_to}
        inside, outside = window_class(window_from, window_to)
        inside, outside = inside.format(f=":f", t=":t"), outside.format(f=":f", t=":t")
        with self._guard():
            # One read transaction: rollups, raw rows and total from the same snapshot.
            self.db.execute("BEGIN")
            try:
                partial = [
                    row[0]
                    for row in self.db.execute(
                        f"SELECT DISTINCT bucket FROM node_rollups WHERE NOT ({inside}) "
                        f"AND NOT ({outside})",
                        params,
                    )
                ]
                # Whole daily rollup rows where every record is in the window; in the days
                # where some are and some are not, the ten-minute rollup rows of the buckets
                # wholly in it, and the raw rows of the buckets an edge cuts or marked raw.
                wholes = [f"FROM node_rollups WHERE {inside}"]
                raws: list[str] = []
                if partial:
                    params["partial"] = json.dumps(partial)
                    wholes[0] += " AND bucket NOT IN (SELECT value FROM json_each(:partial))"
                    use, ranges = fine_plan(
                        self._fine_buckets(bucket_ranges(partial)), window_from, window_to
                    )
                    if use:
                        params["fine"] = json.dumps(use)
                        wholes.append(
                            "FROM fine_rollups WHERE bucket IN (SELECT value FROM json_each(:fine))"
                        )
                    if ranges:
                        raws = self._raw_ranges(ranges, window_from, window_to, params)
                union = " UNION ALL ".join(
                    [
                        f"SELECT node_hash, records, events, min_start, max_end, probe_mask {whole}"
                        for whole in wholes
                    ]
                    + [
                        f"SELECT node_hash, 1, count, obs_start, obs_end, {ROW_MASK_SQL} {raw}"
                        for raw in raws
                    ]
                )
                # The masks' OR from their distinct values: ten max() of masked bits per row
                # cost 8% of the windowed verify's CPU (10M records, 600k rows grouped).
                groups = [
                    (*row[:5], reduce(operator.or_, map(int, row[5].split(","))))
                    for row in self.db.execute(
                        "SELECT node_hash, sum(records), sum(events), min(min_start), "
                        "max(max_end), group_concat(DISTINCT probe_mask) "
                        f"FROM ({union}) GROUP BY node_hash",
                        params,
                    )
                ]
                # Names only for nodes outside the map (the map names its own), read only
                # when there are any: candidates from the same rows, the least in store order.
                others = sorted({row[0] for row in groups} - set(expected))
                firsts: list[Any] = []
                if others:
                    params["others"] = json.dumps(others)
                    pick = " AND node_hash IN (SELECT value FROM json_each(:others))"
                    query = " UNION ALL ".join(
                        [
                            "SELECT node_hash, first_chain, first_sequence, first_line, "
                            f"function_name, purl {whole}{pick}"
                            for whole in wholes
                        ]
                        + [
                            "SELECT node_hash, chain_id, sequence, line, function_name, "
                            f"purl {raw}{pick}"
                            for raw in raws
                        ]
                    )
                    firsts = self.db.execute(query, params).fetchall()
                total = self.db.execute(
                    "SELECT coalesce(sum(records), 0) FROM node_rollups"
                ).fetchone()[0]
            finally:
                self.db.execute("COMMIT")
        return combine(groups, firsts, expected, int(total))

    def _fine_buckets(self, days: list[tuple[str, str]]) -> list[Any]:
        """The ten-minute buckets of these day ranges (FINE_BUCKET_COLUMNS)."""
        rows: list[Any] = []
        for low, high in days:
            rows += self.db.execute(
                f"SELECT {', '.join(FINE_BUCKET_COLUMNS)} FROM fine_buckets "
                "WHERE bucket >= ? AND bucket < ?",
                (low, high),
            ).fetchall()
        return rows

    def _raw_ranges(
        self,
        ranges: list[tuple[str, str]],
        window_from: str | None,
        window_to: str | None,
        params: dict[str, Any],
    ) -> list[str]:
        """The FROM clause (none or one) reading the raw rows of these observed_at ranges that
        meet the window: only the part of each range a record meeting the window can be
        observed in (from the span bounds; run in the reading transaction), each range one
        index search. The ranges are a JSON list joined to the rows, not an OR of ranges with
        a condition on the window's whole reach (SQLite read the index over the whole reach:
        every row of the window, 18x the rows at 10M), nor one SELECT per range (a compound
        SELECT holds at most 500)."""
        bounds = self.db.execute("SELECT before_us, after_us FROM span_bounds").fetchone()
        before, after = (int(bounds[0]), int(bounds[1])) if bounds else (0, 0)
        low = None if window_from is None else shifted(window_from, -after)
        high = None if window_to is None else shifted(window_to, before)
        ranges = clip(ranges, low, high)
        if not ranges:
            return []
        params["ranges"] = json.dumps(ranges)
        return [
            "FROM json_each(:ranges) AS part JOIN observations "
            "ON observed_at >= json_extract(part.value, '$[0]') "
            f"AND observed_at < json_extract(part.value, '$[1]') WHERE {_WINDOW}"
        ]

    def provenance(self, chain_id: str, sequence: int) -> Provenance | None:
        with self._guard():
            row = self.db.execute(
                "SELECT seal_sha256, collector_key_ids, signed FROM chunks "
                "WHERE chain_id = ? AND sequence = ?",
                (chain_id, sequence),
            ).fetchone()
        if row is None:
            return None
        return Provenance(chain_id, sequence, row[0], key_ids(row[1]), bool(row[2]))

    def seal_bytes(self, chain_id: str, sequence: int) -> bytes | None:
        with self._guard():
            row = self.db.execute(
                "SELECT seal FROM chunks WHERE chain_id = ? AND sequence = ?",
                (chain_id, sequence),
            ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def prune(self, cutoff: dt.datetime) -> PruneResult:
        boundary = cutoff.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        text = format_timestamp(boundary)
        with self._guard():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                removed = self.db.execute(
                    "DELETE FROM observations WHERE observed_at < ?", (text,)
                ).rowcount
                # Rollup buckets are of observed_at: those before the day go with it.
                for table in ("node_rollups", "fine_rollups", "fine_buckets"):
                    self.db.execute(f"DELETE FROM {table} WHERE bucket < ?", (text,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return PruneResult(text, records_removed=removed)

    # --- function maps and reports ----------------------------------------------------------

    def put_function_map(self, function_map: StoredFunctionMap) -> bool:
        m = function_map
        with self._guard():
            cursor = self.db.execute(
                # The rule of base.upgrades: only a checked signature replaces a copy
                # without one; the first stored_at stays.
                "INSERT INTO function_maps VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (digest) DO UPDATE SET envelope = excluded.envelope, "
                "signed = excluded.signed, signature_checked = excluded.signature_checked, "
                "signers = excluded.signers "
                "WHERE excluded.signature_checked AND NOT function_maps.signature_checked",
                (
                    m.digest,
                    m.service,
                    m.statement,
                    m.envelope,
                    int(m.signed),
                    int(m.signature_checked),
                    join_key_ids(m.signers),
                    m.stored_at,
                ),
            )
        return cursor.rowcount == 1

    @staticmethod
    def _map(row: Any) -> StoredFunctionMap:
        return function_map_from_row(row, row[7])

    def get_function_map(self, digest: str) -> StoredFunctionMap | None:
        with self._guard():
            row = self.db.execute(
                "SELECT * FROM function_maps WHERE digest = ?", (digest,)
            ).fetchone()
        return None if row is None else self._map(row)

    def signature_checked(self, digest: str) -> bool | None:
        with self._guard():
            row = self.db.execute(
                "SELECT signature_checked FROM function_maps INDEXED BY function_maps_signature "
                "WHERE digest = ?",
                (digest,),
            ).fetchone()
        return None if row is None else bool(row[0])

    def list_function_maps(self) -> list[StoredFunctionMap]:
        with self._guard():
            rows = self.db.execute(
                "SELECT * FROM function_maps ORDER BY stored_at, digest"
            ).fetchall()
        return [self._map(row) for row in rows]

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
        created = format_timestamp(utc_now())
        packed = _pack_report(encoded if encoded is not None else encode_report(report))
        if not self._report_writer.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise StoreUnavailableError(f"store {self.display_url}: database is locked")
        try:
            with self._guard():
                cursor = self.db.execute(
                    "INSERT INTO verification_reports (function_map_digest, created_at, "
                    "window_from, window_to, verified, report) VALUES (?, ?, ?, ?, ?, ?)",
                    (function_map_digest, created, window_from, window_to, int(verified), packed),
                )
        finally:
            self._report_writer.release()
        return StoredReport(
            int(cursor.lastrowid or 0),
            function_map_digest,
            created,
            window_from,
            window_to,
            verified,
            report,
        )

    @staticmethod
    def _report(row: Any) -> StoredReport:
        report_id, digest, created, window_from, window_to, verified, stored = row
        report = json.loads(unpack_report(stored))
        return StoredReport(
            report_id, digest, created, window_from, window_to, bool(verified), report
        )

    def get_report(self, report_id: int) -> StoredReport | None:
        with self._guard():
            row = self.db.execute(
                "SELECT * FROM verification_reports WHERE id = ?", (report_id,)
            ).fetchone()
        return None if row is None else self._report(row)

    def list_reports(self, function_map_digest: str | None = None) -> list[StoredReport]:
        with self._guard():
            rows = self.db.execute(
                "SELECT * FROM verification_reports WHERE (? IS NULL OR "
                "function_map_digest = ?) ORDER BY id",
                (function_map_digest, function_map_digest),
            ).fetchall()
        return [self._report(row) for row in rows]
