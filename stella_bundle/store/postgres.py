"""PostgreSQL store (psycopg 3): native range partitions by day on `observed_at`, COPY ingest.

- Partitions are made by the store itself (no extension, air-gapped servers included): today
  and tomorrow ahead, and the days an ingest announces (`prepare_days`, from the seals'
  windows), each `CREATE TABLE IF NOT EXISTS … PARTITION OF` in a short transaction of its own
  (partition DDL locks the parent; holding that through a long COPY would stall every reader).
  An unannounced day gets its partition inside the ingest transaction.
- Ingest is one transaction: rows streamed into one COPY while chunks are read, then the chunk
  rows (provenance, seal) inserted `ON CONFLICT DO NOTHING`. A lost server aborts it whole:
  nothing half-written.
- Retention detaches and drops whole day partitions, listed in the result.
- Coverage is one GROUP BY over the window in a REPEATABLE READ snapshot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import operator
import re
from collections.abc import Collection, Iterable, Iterator
from typing import Any, Final

import psycopg
from msgspec import UNSET
from psycopg import sql
from psycopg.copy import Copy, QueuedLibpqWriter

from ..timeutil import format_timestamp, parse_timestamp, utc_now
from .base import (
    ChunkConflict,
    DroppedPartition,
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
from .config import redact, scrub
from .migrations import Migration, check_sequence
from .rollups import (
    FINE_BUCKET_COLUMNS,
    ROLLUP_COLUMNS,
    ROW_MASK_SQL,
    STORED_PROBE_ORDER,
    Fold,
    Rollups,
    bucket_ranges,
    clip,
    combine,
    fine_plan,
    micros,
    window_class,
)
from .rows import (
    COLUMNS,
    DecodedChunk,
    Row,
    chunk_rows,
    function_map_from_row,
    join_key_ids,
    key_ids,
    load_record,
)

PARTITION_PREFIX: Final = "observations_p"
PARTITION_RE: Final = re.compile(r"^observations_p([0-9]{8})\Z")
DAYS_AHEAD: Final = 1  # today and this many days after it exist before data arrives
COPY_BLOCK: Final = 1 << 20
COPY_SLICE: Final = 10_000  # records of a chunk formatted per COPY write (copy_lines)
_DAY: Final = operator.itemgetter(slice(0, 10))  # a canonical timestamp's YYYY-MM-DD

# Migration advisory lock: two `stella store migrate` at once apply each version once.
_MIGRATION_LOCK: Final = 0x57E11A

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "chunks with provenance, day-partitioned observations, function maps, reports",
        (
            """CREATE TABLE chunks (
                chain_id text COLLATE "C" NOT NULL,
                sequence bigint NOT NULL,
                seal_sha256 text NOT NULL,
                collector_key_ids text NOT NULL DEFAULT '',
                signed boolean NOT NULL,
                records integer NOT NULL,
                seal bytea,
                ingested_at timestamptz NOT NULL,
                PRIMARY KEY (chain_id, sequence)
            )""",
            # No primary key: a partitioned table's unique keys must include observed_at.
            # Idempotency is the chunks table's (chain, sequence) key, in the same transaction.
            """CREATE TABLE observations (
                chain_id text COLLATE "C" NOT NULL,
                sequence bigint NOT NULL,
                line integer NOT NULL,
                observed_at timestamptz NOT NULL,
                obs_start timestamptz NOT NULL,
                obs_end timestamptz NOT NULL,
                node_hash text COLLATE "C" NOT NULL,
                function_name text NOT NULL,
                probe_type text NOT NULL,
                count bigint NOT NULL,
                purl text,
                record text NOT NULL
            ) PARTITION BY RANGE (observed_at)""",
            """CREATE TABLE function_maps (
                digest text PRIMARY KEY,
                service text NOT NULL,
                statement bytea NOT NULL,
                envelope bytea,
                signed boolean NOT NULL,
                signature_checked boolean NOT NULL,
                signers text NOT NULL DEFAULT '',
                stored_at timestamptz NOT NULL
            )""",
            """CREATE TABLE verification_reports (
                id bigserial PRIMARY KEY,
                function_map_digest text NOT NULL,
                created_at timestamptz NOT NULL,
                window_from timestamptz,
                window_to timestamptz,
                verified boolean NOT NULL,
                report text NOT NULL
            )""",
            "CREATE INDEX verification_reports_map ON verification_reports (function_map_digest)",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        2,
        "span bounds: how far a record's interval reaches around observed_at (window pruning)",
        (
            """CREATE TABLE span_bounds (
                id integer PRIMARY KEY CHECK (id = 1),
                before_us bigint NOT NULL,
                after_us bigint NOT NULL
            )""",
            """INSERT INTO span_bounds SELECT 1,
                GREATEST(COALESCE(max((extract(epoch FROM observed_at - obs_start)
                    * 1000000)::bigint), 0), 0),
                GREATEST(COALESCE(max((extract(epoch FROM obs_end - observed_at)
                    * 1000000)::bigint), 0), 0)
                FROM observations""",
        ),
    ),
)
_PROBES_ARRAY: Final = "ARRAY[" + ", ".join(f"'{p}'" for p in STORED_PROBE_ORDER) + "]::text[]"
# Bit i of a probe mask from a row's probe_type (every stored probe_type is in the array).
_RAW_MASK: Final = f"1 << (array_position({_PROBES_ARRAY}, probe_type) - 1)"
_FIRST: Final = ("first_chain", "first_sequence", "first_line", "function_name", "purl")
# A row's ten-minute bucket (rollups.FINE), as ingest cuts them.
_FINE_BUCKET: Final = "date_bin('10 minutes', observed_at, TIMESTAMPTZ '2000-01-01T00:00:00Z')"


def _rollup_insert(unit: str, table: str = "node_rollups", mask: str = _RAW_MASK) -> str:
    """The rows already stored rolled up as ingest does, per (UTC `unit` of observed_at,
    node); the first record of each in store order names it."""
    bucket = f"date_trunc('{unit}', observed_at, 'UTC')" if unit != "fine" else _FINE_BUCKET
    return f"""INSERT INTO {table}
        SELECT bucket, node_hash, count(*), sum(count), min(obs_start), max(obs_start),
            min(obs_end), max(obs_end), bit_or(mask),
            max(chain_id) FILTER (WHERE rn = 1), max(sequence) FILTER (WHERE rn = 1),
            max(line) FILTER (WHERE rn = 1), max(function_name) FILTER (WHERE rn = 1),
            max(purl) FILTER (WHERE rn = 1)
        FROM (SELECT *, {bucket} AS bucket, {mask} AS mask,
                row_number() OVER (PARTITION BY {bucket}, node_hash
                    ORDER BY chain_id, sequence, line) AS rn
            FROM observations) AS numbered
        GROUP BY bucket, node_hash"""


MIGRATIONS += (
    Migration(
        3,
        "per-node hourly rollups for the coverage question (rollups.py)",
        (
            """CREATE TABLE node_rollups (
                bucket timestamptz NOT NULL,
                node_hash text COLLATE "C" NOT NULL,
                records bigint NOT NULL,
                events bigint NOT NULL,
                min_start timestamptz NOT NULL,
                max_start timestamptz NOT NULL,
                min_end timestamptz NOT NULL,
                max_end timestamptz NOT NULL,
                probe_mask integer NOT NULL,
                first_chain text COLLATE "C" NOT NULL,
                first_sequence bigint NOT NULL,
                first_line integer NOT NULL,
                function_name text NOT NULL,
                purl text,
                PRIMARY KEY (bucket, node_hash)
            )""",
            _rollup_insert("hour"),
        ),
    ),
    Migration(
        4,
        "rollups per day instead of per hour (rollups.py says why)",
        ("DELETE FROM node_rollups", _rollup_insert("day")),
    ),
    Migration(
        5,
        "ten-minute rollups and bucket bounds for the days a window cuts (rollups.py), "
        "a BRIN index on observed_at for the raw rows of the buckets an edge cuts",
        (
            "CREATE TABLE fine_rollups (LIKE node_rollups INCLUDING ALL)",
            """CREATE TABLE fine_buckets (
                bucket timestamptz PRIMARY KEY,
                min_start timestamptz NOT NULL,
                max_start timestamptz NOT NULL,
                min_end timestamptz NOT NULL,
                max_end timestamptz NOT NULL,
                raw boolean NOT NULL
            )""",
            _rollup_insert("fine", "fine_rollups", ROW_MASK_SQL),
            f"""INSERT INTO fine_buckets SELECT {_FINE_BUCKET}, min(obs_start), max(obs_start),
                min(obs_end), max(obs_end), false FROM observations GROUP BY 1""",
            # Rows arrive in time order, so a block range holds a short stretch of time: the
            # raw rows of a bucket are read without scanning its day. Kept summarised by
            # ingest (brin_summarize_new_values), a few pages per range: cheap to keep.
            "CREATE INDEX observations_observed_brin ON observations USING brin (observed_at) "
            "WITH (pages_per_range = 16)",
        ),
    ),
)
LATEST: Final = check_sequence(MIGRATIONS)

# Ingest folds each new chunk's rollup rows (COPY into a temporary table) into the stored ones.
_UPSERT_ROLLUPS: Final = (
    f"INSERT INTO {{table}} AS r ({', '.join(ROLLUP_COLUMNS)}) "
    f"SELECT {', '.join(ROLLUP_COLUMNS)} FROM stella_rollup_batch "
    "ON CONFLICT (bucket, node_hash) DO UPDATE SET "
    "records = r.records + excluded.records, events = r.events + excluded.events, "
    "min_start = LEAST(r.min_start, excluded.min_start), "
    "max_start = GREATEST(r.max_start, excluded.max_start), "
    "min_end = LEAST(r.min_end, excluded.min_end), "
    "max_end = GREATEST(r.max_end, excluded.max_end), "
    "probe_mask = r.probe_mask | excluded.probe_mask, "
    + ", ".join(
        f"{column} = CASE WHEN (excluded.first_chain, excluded.first_sequence, "
        "excluded.first_line) < (r.first_chain, r.first_sequence, r.first_line) "
        f"THEN excluded.{column} ELSE r.{column} END"
        for column in _FIRST
    )
)
_UPSERT_BUCKET: Final = (
    f"INSERT INTO fine_buckets AS b ({', '.join(FINE_BUCKET_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(FINE_BUCKET_COLUMNS))}) "
    "ON CONFLICT (bucket) DO UPDATE SET "
    "min_start = LEAST(b.min_start, excluded.min_start), "
    "max_start = GREATEST(b.max_start, excluded.max_start), "
    "min_end = LEAST(b.min_end, excluded.min_end), "
    "max_end = GREATEST(b.max_end, excluded.max_end), raw = b.raw OR excluded.raw"
)


def partition_name(day: dt.date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def _ts(value: dt.datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def copy_lines(chunk: StoreChunk) -> tuple[Iterable[bytes], set[str], tuple[int, int]]:
    """The chunk's COPY text (in blocks), its days, and how far its records' intervals reach
    before and after their observed_at (microseconds; both 0 without aggregated records).

    Plain fast-path chunks (no backslash anywhere, no aggregated record) are formatted from
    the decoded columns by comprehension, no row tuples (the cost that dominated ingest), a
    slice of COPY_SLICE records at a time as the blocks are taken: the server copies the
    first records of a chunk while the next are formatted, and waits for at most one slice
    at the start of an ingest and after its last write."""
    decoded = chunk.prepared
    if isinstance(decoded, DecodedChunk) and not decoded.aggregated and not decoded.backslash:
        return _plain_blocks(decoded), set(map(_DAY, decoded.observed)), (0, 0)
    text, days, spans = _copy_block(chunk_rows(chunk))
    return ([text.encode("utf-8")] if text else []), days, spans


def _plain_blocks(decoded: DecodedChunk) -> Iterator[bytes]:
    prefix = f"{decoded.chain_id}\t{decoded.sequence}\t"
    null = "\\N"
    records, observed, texts = decoded.records, decoded.observed, decoded.texts
    for start in range(0, len(records), COPY_SLICE):
        stop = start + COPY_SLICE
        lines = [
            f"{prefix}{index}\t{stamp}\t{stamp}\t{stamp}\t{r.node_hash}\t{r.function_name}\t"
            f"{r.probe_type}\t1\t{null if r.purl is UNSET else r.purl}\t{text}\n"
            for index, (r, stamp, text) in enumerate(
                zip(records[start:stop], observed[start:stop], texts[start:stop], strict=True),
                start + 1,
            )
        ]
        yield "".join(lines).encode("utf-8")


def _copy_block(rows: Iterable[Row]) -> tuple[str, set[str], tuple[int, int]]:
    """COPY text-format lines of the rows, and their days (YYYY-MM-DD).

    Only a record whose JSON text holds a backslash can hold characters COPY must escape:
    every other column is validated ASCII, and JSON writes tabs, newlines and carriage
    returns inside strings as backslash escapes (so `function_name` and `purl`, taken from
    the record, can only hold them when the record text holds a backslash).
    """
    lines: list[str] = []
    append = lines.append
    days: set[str] = set()
    null = "\\N"
    before = after = 0
    for row in rows:
        chain, seq, line, observed, start, end, node, name, probe, count, purl, record = row
        days.add(observed[:10])
        if start != observed or end != observed:
            at = micros(observed)
            before = max(before, at - micros(start))
            after = max(after, micros(end) - at)
        if "\\" in record:
            append("\t".join(map(_copy_text, row)))
            continue
        if purl is None:
            purl = null
        append(
            f"{chain}\t{seq}\t{line}\t{observed}\t{start}\t{end}\t{node}\t{name}\t{probe}\t"
            f"{count}\t{purl}\t{record}"
        )
    return ("\n".join(lines) + "\n") if lines else "", days, (before, after)


def _copy_text(value: object) -> str:
    """One field in COPY's text format."""
    if value is None:
        return "\\N"
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


CONNECT_TIMEOUT: Final = 10  # seconds for a server to answer (a host that drops packets)

# libpq's first line: `connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed:
# FATAL:  password authentication failed for user "x"` (psycopg prefixes `connection failed: `).
_CONNECT_LINE: Final = re.compile(
    r'(?:connection (?:failed|is bad): )?connection to server ((?:on socket|at) "[^"]*"'
    r"(?: \([^)]*\))?(?:, port \d+)?) failed: (.*)"
)
_SEVERITY: Final = re.compile(r"^(?:FATAL|ERROR):\s+")
# What each of libpq's reasons asks of the user (matched in its text: a refused login carries
# no SQLSTATE to psycopg).
_CONNECT_HINTS: Final = (
    (
        "password authentication failed",
        "wrong password for this role: check the URL's password, PGPASSWORD or ~/.pgpass",
    ),
    (
        "no password supplied",
        "the server asks for a password: give it in the URL, PGPASSWORD or ~/.pgpass",
    ),
    ('role "', "no such role on this server: check the URL's user"),
    (
        'database "',
        "create the database first (createdb NAME): `stella store init` makes the "
        "tables, not the database",
    ),
    ("no pg_hba.conf entry", "the server does not let this role in from here (pg_hba.conf)"),
    ("Connection refused", "is the server running and listening at this address?"),
    ("No such file or directory", "is the server running, with its socket in this directory?"),
    ("timeout expired", f"no answer within {CONNECT_TIMEOUT} s: is the host reachable?"),
    ("resolve host", "unknown host name"),
    ("translate host name", "unknown host name"),
)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


def connect_failure(message: str) -> str:
    """libpq's refusal as `cannot connect to the server WHERE: REASON (what to do)`."""
    line = _first_line(message)
    matched = _CONNECT_LINE.fullmatch(line)
    where, reason = (f" {matched.group(1)}", matched.group(2)) if matched else ("", line)
    reason = _SEVERITY.sub("", reason)
    for needle, hint in _CONNECT_HINTS:
        if needle in reason and (not needle.endswith('"') or reason.endswith("does not exist")):
            return f"cannot connect to the server{where}: {reason} ({hint})"
    return f"cannot connect to the server{where}: {reason}"


class PostgresStore(ObservationStore):
    backend = "postgres"

    def __init__(self, url: str) -> None:
        super().__init__(url, redact(url))
        try:
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.ProgrammingError as exc:  # a URL libpq cannot parse
            raise StoreError(
                f"store {self.display_url}: {scrub(str(exc), url)}", field="--store"
            ) from exc
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"store {self.display_url}: {connect_failure(scrub(str(exc), url))}"
            ) from exc
        try:
            self.db.execute("SET TimeZone = 'UTC'")
        except psycopg.Error as exc:
            raise self._fail("cannot set up the session", exc) from exc
        self._partitions: set[str] | None = None

    def close(self) -> None:
        self.db.close()

    def reusable(self) -> bool:
        if self.db.closed or self.db.broken:
            return False
        if self.db.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False
        # One round trip: a server restarted since the last use has closed this connection,
        # and the next request must not be the one to find out (a 503 for a store that is up).
        try:
            self.db.execute("SELECT 1")
        except psycopg.Error:
            return False
        # Partitions may have been created or dropped by others since: read them again.
        self._partitions = None
        return True

    def _fail(self, action: str, exc: BaseException) -> StoreUnavailableError:
        detail = _first_line(scrub(str(exc), self.url)) or type(exc).__name__
        return StoreUnavailableError(
            f"store {self.display_url}: {action}, nothing written: {detail}"
        )

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Database failures become one line naming the store (exit 2); the transaction the
        failure interrupted is rolled back by the server."""
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._partitions = None
            raise self._fail(action, exc) from exc
        except (
            psycopg.errors.InsufficientPrivilege,
            psycopg.errors.ReadOnlySqlTransaction,
        ) as exc:
            # The server is up and refuses the write: a role without the rights, a standby or
            # a database set read-only. Not a bug of ours, and the transaction is rolled back.
            self._partitions = None
            detail = _first_line(scrub(str(exc), self.url))
            raise StoreError(
                f"store {self.display_url}: {action}: refused by the server, nothing written: "
                f"{detail} (the store's role must own its tables and may write; a read-only "
                "server or a standby cannot take writes)"
            ) from exc

    # --- schema -----------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._guard("reading the schema version"):
            row = self.db.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
            if not row or not row[0]:
                return 0
            version = self.db.execute("SELECT max(version) FROM schema_migrations").fetchone()
            return int(version[0] or 0) if version else 0

    def latest_version(self) -> int:
        return LATEST

    def foreign_tables(self) -> list[str]:
        with self._guard("reading the schema"):
            rows = self.db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename != 'schema_migrations' ORDER BY 1"
            ).fetchall()
        return [str(row[0]) for row in rows] if self.schema_version() == 0 else []

    @contextlib.contextmanager
    def migration_lock(self) -> Iterator[None]:
        # A session lock across the versions' transactions (each also takes the transaction
        # lock, as before): between two of them another `init` read version 4 of 6 and
        # refused the store as "initialised at an older version".
        with self._guard("waiting for another migration"):
            self.db.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                self.db.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))

    def migrate(self) -> list[int]:
        with self.migration_lock():
            return self._migrate()

    def _migrate(self) -> list[int]:
        self.check_migratable()
        applied: list[int] = []
        with self._guard("migrating"):
            for migration in MIGRATIONS:
                with self.db.transaction():
                    self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    self.db.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY "
                        "KEY, description text NOT NULL, applied_at timestamptz NOT NULL)"
                    )
                    done = self.db.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = %s",
                        (migration.version,),
                    ).fetchone()
                    if done:
                        continue
                    for statement in migration.statements:
                        self.db.execute(statement.encode())
                    self.db.execute(
                        "INSERT INTO schema_migrations VALUES (%s, %s, now())",
                        (migration.version, migration.description),
                    )
                    applied.append(migration.version)
        if self.schema_version() >= 1:
            self.ensure_partitions(())
        return applied

    def partitions(self) -> list[str]:
        with self._guard("listing partitions"):
            rows = self.db.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'observations' "
                "AND p.relnamespace = to_regnamespace(current_schema()) ORDER BY 1"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def ensure_partitions(self, days: Iterable[dt.date], now: dt.datetime | None = None) -> None:
        """Create the day partitions of `days`, and of today and DAYS_AHEAD days after it."""
        today = (now or utc_now()).astimezone(dt.UTC).date()
        wanted = set(days) | {today + dt.timedelta(days=n) for n in range(DAYS_AHEAD + 1)}
        if self._partitions is None:
            self._partitions = set(self.partitions())
        with self._guard("creating partitions"), self.db.cursor() as cursor:
            for day in sorted(wanted):
                if partition_name(day) not in self._partitions:
                    self._create_partition(cursor, day)

    def status(self) -> StoreStatus:
        version = self.schema_version()
        status = StoreStatus(self.display_url, self.backend, version, LATEST)
        if version == 0:
            return status
        with self._guard("reading the status"):
            row = self.db.execute(
                "SELECT count(*), min(observed_at), max(observed_at) FROM observations"
            ).fetchone()
            assert row is not None
            status.records = int(row[0])
            status.first_observed_at, status.last_observed_at = _ts(row[1]), _ts(row[2])
            row = self.db.execute(
                "SELECT count(*), count(DISTINCT chain_id) FROM chunks"
            ).fetchone()
            assert row is not None
            status.chunks, status.chains = int(row[0]), int(row[1])
            status.function_maps = int(self._one("SELECT count(*) FROM function_maps"))
            status.reports = int(self._one("SELECT count(*) FROM verification_reports"))
        status.partitions = self.partitions()
        return status

    def _one(self, query: str, params: Any = None) -> Any:
        row = self.db.execute(query.encode(), params).fetchone()
        return None if row is None else row[0]

    # --- evidence ---------------------------------------------------------------------------

    def stored_seals(self, chain_id: str) -> dict[int, str]:
        with self._guard("reading stored seals"):
            rows = self.db.execute(
                "SELECT sequence, seal_sha256 FROM chunks WHERE chain_id = %s", (chain_id,)
            ).fetchall()
        return {int(s): str(d) for s, d in rows}

    def prepare_days(self, days: Iterable[dt.date]) -> None:
        self.ensure_partitions(days)

    def store_chunks(self, chunks: Iterable[StoreChunk]) -> IngestResult:
        """One transaction, records streamed into COPY while the chunks are read (the server
        works while Python decodes the next ones).

        The chunk rows (provenance, seals) are inserted after the COPY, `ON CONFLICT DO
        NOTHING`: fewer rows inserted than chunks means another ingest stored some meanwhile,
        and the whole transaction is rolled back. A day with no partition yet (one that
        `prepare_days` did not announce) gets its partition inside this transaction, which
        locks the parent table until commit: rare, since today and tomorrow are made ahead.
        """
        result = IngestResult()
        known: dict[str, dict[int, str]] = {}
        new: list[tuple[Provenance, int, bytes | None]] = []
        offered: set[tuple[str, int]] = set()
        spans = (0, 0)  # the widest reach of a record's interval around its observed_at
        rollups = Rollups()
        touched: set[str] = set()  # the partitions written to
        if self._partitions is None:
            self._partitions = set(self.partitions())
        partitions = self._partitions
        try:
            with (
                self._guard("ingest interrupted"),
                self.db.transaction(),
                self.db.cursor() as cursor,
                _CopyStream(self, cursor) as stream,
            ):
                for chunk in chunks:
                    p = chunk.provenance
                    seals = known.get(p.chain_id)
                    if seals is None:
                        stream.pause()
                        cursor.execute(
                            "SELECT sequence, seal_sha256 FROM chunks WHERE chain_id = %s",
                            (p.chain_id,),
                        )
                        seals = known[p.chain_id] = {int(q): str(d) for q, d in cursor}
                    stored = seals.get(p.sequence)
                    if stored is not None:
                        if stored != p.seal_sha256:
                            result.conflicts.append(
                                ChunkConflict(p.chain_id, p.sequence, stored, p.seal_sha256)
                            )
                        else:
                            result.chunks_already_stored += 1
                        continue
                    if (p.chain_id, p.sequence) in offered or result.conflicts:
                        continue  # a duplicate in the batch, or nothing will be kept anyway
                    offered.add((p.chain_id, p.sequence))
                    blocks, days, (before, after) = copy_lines(chunk)
                    touched.update(PARTITION_PREFIX + d.replace("-", "") for d in days)
                    spans = (max(spans[0], before), max(spans[1], after))
                    missing = {
                        d for d in days if PARTITION_PREFIX + d.replace("-", "") not in partitions
                    }
                    if missing:
                        stream.pause()
                        for day in sorted(missing):
                            self._create_partition(cursor, dt.date.fromisoformat(day))
                    for block in blocks:
                        stream.write(block)
                    rollups.add(chunk)  # while the server copies the chunk
                    if rollups.full():
                        stream.pause()
                        self._store_rollups(cursor, rollups.take(final=False))
                    new.append((p, chunk.size, chunk.seal))
                    result.records_stored += chunk.size
                stream.pause()
                if result.conflicts:
                    raise _Refused
                if rollups:
                    self._store_rollups(cursor, rollups.take(final=True))
                if touched:
                    # New block ranges get their BRIN summary now, not at the next vacuum:
                    # unsummarised ranges are read by every window.
                    cursor.execute(
                        "SELECT brin_summarize_new_values(i.indexrelid) FROM pg_index i "
                        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                        "WHERE a.amname = 'brin' AND i.indrelid = ANY(%s::regclass[])",
                        (sorted(touched),),
                    )
                if spans != (0, 0):
                    # Window queries prune partitions with these bounds: they must cover
                    # every record, so they grow in the transaction that stores the record.
                    cursor.execute(
                        "UPDATE span_bounds SET before_us = GREATEST(before_us, %s), "
                        "after_us = GREATEST(after_us, %s) WHERE id = 1",
                        spans,
                    )
                if new:
                    now = utc_now()
                    cursor.executemany(
                        "INSERT INTO chunks VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT DO NOTHING",
                        [
                            (
                                p.chain_id,
                                p.sequence,
                                p.seal_sha256,
                                join_key_ids(p.collector_key_ids),
                                p.signed,
                                count,
                                seal,
                                now,
                            )
                            for p, count, seal in new
                        ],
                    )
                    if cursor.rowcount != len(new):
                        raise StoreError(
                            f"store {self.display_url}: another ingest stored some of these "
                            "chunks meanwhile; nothing written by this one, run it again "
                            "(ingest is idempotent)"
                        )
        except _Refused:
            self._partitions = None  # partitions made in the rolled-back transaction are gone
            return IngestResult(
                chunks_already_stored=result.chunks_already_stored, conflicts=result.conflicts
            )
        except BaseException:
            self._partitions = None
            raise
        result.chunks_stored = len(new)
        return result

    def _store_rollups(self, cursor: psycopg.Cursor[Any], fold: Fold) -> None:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS stella_rollup_batch (LIKE node_rollups) "
            "ON COMMIT DROP"
        )
        text = _copy_text
        for table, rows in (("node_rollups", fold.days), ("fine_rollups", fold.fine)):
            if not rows:
                continue
            lines = [
                f"{bucket}\t{node}\t{records}\t{events}\t{low}\t{high}\t{low_end}\t"
                f"{high_end}\t{mask}\t{text(chain)}\t{sequence}\t{line}\t{text(name)}\t"
                f"{text(purl)}"
                for bucket, node, records, events, low, high, low_end, high_end, mask, chain, sequence, line, name, purl in rows
            ]
            with cursor.copy(
                sql.SQL("COPY stella_rollup_batch ({}) FROM STDIN").format(
                    sql.SQL(", ").join(map(sql.Identifier, ROLLUP_COLUMNS))
                )
            ) as copy:
                self._copy_write(copy, ("\n".join(lines) + "\n").encode("utf-8"))
            cursor.execute(_UPSERT_ROLLUPS.replace("{table}", table).encode())
            cursor.execute("TRUNCATE stella_rollup_batch")  # the next fold of this ingest
        if fold.buckets:
            cursor.executemany(_UPSERT_BUCKET, fold.buckets)

    def _create_partition(self, cursor: psycopg.Cursor[Any], day: dt.date) -> None:
        name = partition_name(day)
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        end = start + dt.timedelta(days=1)
        statement = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF observations FOR VALUES FROM ({}) TO ({})"
        ).format(
            sql.Identifier(name),
            sql.Literal(format_timestamp(start)),
            sql.Literal(format_timestamp(end)),
        )
        try:
            # A savepoint inside an ingest's transaction, a transaction of its own otherwise.
            with self.db.transaction():
                cursor.execute(statement)
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            # Another ingest made it at the same moment: IF NOT EXISTS does not cover two
            # creations racing (three ingests of a new day at once: "internal error:
            # DuplicateTable: relation observations_p20260123 already exists", exit 3).
            pass
        if self._partitions is not None:
            self._partitions.add(name)

    def _copy_write(self, copy: Copy, data: bytes) -> None:
        """Send COPY data in blocks (a test stops the server between two of them)."""
        view = memoryview(data)
        for start in range(0, len(view), COPY_BLOCK):
            copy.write(view[start : start + COPY_BLOCK])

    def _window(
        self, cursor: psycopg.Cursor[Any], window_from: str | None, window_to: str | None
    ) -> tuple[str, dict[str, Any]]:
        """The WHERE clause of a window (the verifier's rule on obs_start/obs_end) and, from
        the span bounds, a condition on the partition key itself, so that PostgreSQL scans
        only the day partitions the window can reach. Sound because every stored record has
        observed_at - before_us <= obs_start and obs_end <= observed_at + after_us. Must run
        in the reading transaction's snapshot (REPEATABLE READ)."""
        clauses = ["TRUE"]
        params: dict[str, Any] = {}
        if window_from is None and window_to is None:
            return " AND ".join(clauses), params
        cursor.execute("SELECT before_us, after_us FROM span_bounds WHERE id = 1")
        bounds = cursor.fetchone()
        before, after = (int(bounds[0]), int(bounds[1])) if bounds else (None, None)
        if window_from is not None:
            clauses.append("obs_end >= %(f)s::timestamptz")
            params["f"] = window_from
            if after is not None:
                with contextlib.suppress(OverflowError):
                    low = parse_timestamp(window_from) - dt.timedelta(microseconds=after)
                    clauses.append("observed_at >= %(low)s")
                    params["low"] = low
        if window_to is not None:
            clauses.append("obs_start <= %(t)s::timestamptz")
            params["t"] = window_to
            if before is not None:
                with contextlib.suppress(OverflowError):
                    high = parse_timestamp(window_to) + dt.timedelta(microseconds=before)
                    clauses.append("observed_at <= %(high)s")
                    params["high"] = high
        return " AND ".join(clauses), params

    def iter_records(
        self, window_from: str | None = None, window_to: str | None = None
    ) -> Iterator[StoredRecord]:
        with (
            self._guard("reading records"),
            self.db.transaction(),
            self.db.cursor() as plain,
            self.db.cursor(name="stella_records") as cursor,
        ):
            plain.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            where, params = self._window(plain, window_from, window_to)
            cursor.itersize = 10_000
            cursor.execute(
                "SELECT record, chain_id, sequence, line FROM observations WHERE "
                + where
                + " ORDER BY chain_id, sequence, line",
                params,
            )
            for record, chain_id, sequence, line in cursor:
                yield StoredRecord(load_record(record), chain_id, int(sequence), int(line))

    def aggregate_nodes(
        self,
        window_from: str | None = None,
        window_to: str | None = None,
        expected: Collection[str] = (),
    ) -> NodeAggregation:
        params: dict[str, Any] = {"f": window_from, "t": window_to}
        inside, outside = window_class(window_from, window_to)
        marks = {"f": "%(f)s::timestamptz", "t": "%(t)s::timestamptz"}
        inside, outside = inside.format(**marks), outside.format(**marks)
        with (
            self._guard("aggregating"),
            self.db.transaction(),
            self.db.cursor() as cursor,
        ):
            # One snapshot for the rollups, the raw rows and the total.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute(
                f"SELECT DISTINCT bucket FROM node_rollups WHERE NOT ({inside}) "
                f"AND NOT ({outside})",
                params,
            )
            partial = [format_timestamp(row[0]) for row in cursor.fetchall()]
            # Whole daily rollup rows where every record is in the window; in the days where
            # some are and some are not, the ten-minute rollup rows of the buckets wholly in
            # it, and the raw rows of the buckets an edge cuts or marked raw (the ranges on
            # observed_at prune partitions, the BRIN index the rest of the day).
            wholes = [f"FROM node_rollups WHERE {inside}"]
            raw = ""
            if partial:
                params["partial"] = partial
                wholes[0] += " AND bucket <> ALL(%(partial)s::timestamptz[])"
                use, ranges = fine_plan(
                    self._fine_buckets(cursor, bucket_ranges(partial)), window_from, window_to
                )
                if use:
                    params["fine"] = use
                    wholes.append("FROM fine_rollups WHERE bucket = ANY(%(fine)s::timestamptz[])")
                if ranges:
                    # The window's rule, and the observed_at range its records can have: only
                    # that part of a bucket is read (the BRIN index skips the rest).
                    window, reach = self._window(cursor, window_from, window_to)
                    params.update(reach)
                    ranges = clip(
                        ranges,
                        format_timestamp(reach["low"]) if "low" in reach else None,
                        format_timestamp(reach["high"]) if "high" in reach else None,
                    )
                for index, (low, high) in enumerate(ranges):
                    params[f"lo{index}"], params[f"hi{index}"] = low, high
                if ranges:
                    raw = (
                        "FROM observations WHERE ("
                        + " OR ".join(
                            f"(observed_at >= %(lo{i})s::timestamptz "
                            f"AND observed_at < %(hi{i})s::timestamptz)"
                            for i in range(len(ranges))
                        )
                        + f") AND {window}"
                    )
            union = " UNION ALL ".join(
                f"SELECT node_hash, records, events, min_start, max_end, probe_mask {whole}"
                for whole in wholes
            )
            if raw:
                union += (
                    " UNION ALL SELECT node_hash, 1, count, obs_start, obs_end, "
                    f"{ROW_MASK_SQL} {raw}"
                )
            cursor.execute(
                "SELECT node_hash, sum(records)::bigint, sum(events)::bigint, min(min_start), "
                f"max(max_end), bit_or(probe_mask) FROM ({union}) AS rows GROUP BY node_hash",
                params,
            )
            groups = [
                (node, records, events, format_timestamp(first), format_timestamp(last), mask)
                for node, records, events, first, last, mask in cursor.fetchall()
            ]
            # Names only for nodes outside the map (the map names its own), read only when
            # there are any: candidates from the same rows, the least in store order.
            others = sorted({row[0] for row in groups} - set(expected))
            firsts: list[Any] = []
            if others:
                params["others"] = others
                pick = " AND node_hash = ANY(%(others)s::text[])"
                query = " UNION ALL ".join(
                    "SELECT node_hash, first_chain, first_sequence, first_line, function_name, "
                    f"purl {whole}{pick}"
                    for whole in wholes
                )
                if raw:
                    query += (
                        " UNION ALL SELECT node_hash, chain_id, sequence, line, function_name, "
                        f"purl {raw}{pick}"
                    )
                cursor.execute(query, params)
                firsts = cursor.fetchall()
            cursor.execute("SELECT coalesce(sum(records), 0)::bigint FROM node_rollups")
            total_row = cursor.fetchone()
            total = int(total_row[0]) if total_row else 0
        return combine(groups, firsts, expected, total)

    @staticmethod
    def _fine_buckets(cursor: psycopg.Cursor[Any], days: list[tuple[str, str]]) -> list[Any]:
        """The ten-minute buckets of these day ranges (FINE_BUCKET_COLUMNS, times canonical)."""
        rows: list[Any] = []
        for low, high in days:
            cursor.execute(
                f"SELECT {', '.join(FINE_BUCKET_COLUMNS)} FROM fine_buckets "
                "WHERE bucket >= %s::timestamptz AND bucket < %s::timestamptz",
                (low, high),
            )
            rows += [(*map(format_timestamp, row[:5]), row[5]) for row in cursor.fetchall()]
        return rows

    def provenance(self, chain_id: str, sequence: int) -> Provenance | None:
        with self._guard("reading provenance"):
            row = self.db.execute(
                "SELECT seal_sha256, collector_key_ids, signed FROM chunks "
                "WHERE chain_id = %s AND sequence = %s",
                (chain_id, sequence),
            ).fetchone()
        if row is None:
            return None
        return Provenance(chain_id, sequence, row[0], key_ids(row[1]), bool(row[2]))

    def seal_bytes(self, chain_id: str, sequence: int) -> bytes | None:
        with self._guard("reading a seal"):
            value = self._one(
                "SELECT seal FROM chunks WHERE chain_id = %s AND sequence = %s",
                (chain_id, sequence),
            )
        return None if value is None else bytes(value)

    def prune(self, cutoff: dt.datetime) -> PruneResult:
        boundary = cutoff.astimezone(dt.UTC).date()
        result = PruneResult(
            format_timestamp(
                dt.datetime(boundary.year, boundary.month, boundary.day, tzinfo=dt.UTC)
            )
        )
        names = self.partitions()
        with self._guard("pruning"), self.db.transaction():
            for name in names:
                match = PARTITION_RE.match(name)
                if match is None:
                    continue
                day = dt.datetime.strptime(match.group(1), "%Y%m%d").date()
                if day >= boundary:  # its upper bound is after the cutoff day's start
                    continue
                table = sql.Identifier(name)
                count = self.db.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
                records = int(count[0]) if count else 0
                self.db.execute(
                    sql.SQL("ALTER TABLE observations DETACH PARTITION {}").format(table)
                )
                self.db.execute(sql.SQL("DROP TABLE {}").format(table))
                result.partitions_dropped.append(DroppedPartition(name, day.isoformat(), records))
                result.records_removed += records
            # Rollup buckets are of observed_at: those of the dropped days go with them.
            for rollup in ("node_rollups", "fine_rollups", "fine_buckets"):
                self.db.execute(
                    sql.SQL("DELETE FROM {} WHERE bucket < %s").format(sql.Identifier(rollup)),
                    (result.cutoff,),
                )
        self._partitions = None
        return result

    # --- function maps and reports ----------------------------------------------------------

    def put_function_map(self, function_map: StoredFunctionMap) -> bool:
        m = function_map
        with self._guard("storing a function map"):
            cursor = self.db.execute(
                # The rule of base.upgrades: only a checked signature replaces a copy without
                # one; the first stored_at stays.
                "INSERT INTO function_maps VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (digest) DO UPDATE SET envelope = excluded.envelope, "
                "signed = excluded.signed, signature_checked = excluded.signature_checked, "
                "signers = excluded.signers "
                "WHERE excluded.signature_checked AND NOT function_maps.signature_checked",
                (
                    m.digest,
                    m.service,
                    m.statement,
                    m.envelope,
                    m.signed,
                    m.signature_checked,
                    join_key_ids(m.signers),
                    m.stored_at,
                ),
            )
        return cursor.rowcount == 1

    @staticmethod
    def _map(row: Any) -> StoredFunctionMap:
        return function_map_from_row(row, format_timestamp(row[7]))

    def get_function_map(self, digest: str) -> StoredFunctionMap | None:
        with self._guard("reading a function map"):
            row = self.db.execute(
                "SELECT * FROM function_maps WHERE digest = %s", (digest,)
            ).fetchone()
        return None if row is None else self._map(row)

    def list_function_maps(self) -> list[StoredFunctionMap]:
        with self._guard("listing function maps"):
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
        with self._guard("storing a report"):
            row = self.db.execute(
                "INSERT INTO verification_reports (function_map_digest, created_at, window_from, "
                "window_to, verified, report) VALUES (%s, now(), %s, %s, %s, %s) "
                "RETURNING id, created_at",
                (
                    function_map_digest,
                    window_from,
                    window_to,
                    verified,
                    (encoded if encoded is not None else encode_report(report)).decode(),
                ),
            ).fetchone()
        assert row is not None
        return StoredReport(
            int(row[0]),
            function_map_digest,
            format_timestamp(row[1]),
            window_from,
            window_to,
            verified,
            report,
        )

    @staticmethod
    def _report(row: Any) -> StoredReport:
        report_id, digest, created, window_from, window_to, verified, text = row
        return StoredReport(
            int(report_id),
            digest,
            format_timestamp(created),
            _ts(window_from),
            _ts(window_to),
            bool(verified),
            json.loads(text),
        )

    def get_report(self, report_id: int) -> StoredReport | None:
        with self._guard("reading a report"):
            row = self.db.execute(
                "SELECT * FROM verification_reports WHERE id = %s", (report_id,)
            ).fetchone()
        return None if row is None else self._report(row)

    def list_reports(self, function_map_digest: str | None = None) -> list[StoredReport]:
        with self._guard("listing reports"):
            rows = self.db.execute(
                "SELECT * FROM verification_reports WHERE (%(d)s::text IS NULL OR "
                "function_map_digest = %(d)s::text) ORDER BY id",
                {"d": function_map_digest},
            ).fetchall()
        return [self._report(row) for row in rows]


class _Refused(Exception):
    """A conflicting chunk: the transaction is rolled back and the conflicts returned."""


class _CopyStream:
    """One COPY into `observations` opened when data comes, closed (paused) whenever the
    transaction must run another statement; data goes through a writer thread, so the server
    copies while Python reads the next chunk."""

    def __init__(self, store: PostgresStore, cursor: psycopg.Cursor[Any]) -> None:
        self.store = store
        self.cursor = cursor
        self.open: contextlib.ExitStack | None = None
        self.copy: Copy | None = None

    def __enter__(self) -> _CopyStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: Any
    ) -> None:
        if self.open is not None:
            opened, self.open, self.copy = self.open, None, None
            opened.__exit__(kind, value, tb)

    def write(self, data: bytes) -> None:
        if self.copy is None:
            self.open = contextlib.ExitStack()
            statement = sql.SQL("COPY observations ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
            )
            self.copy = self.open.enter_context(
                self.cursor.copy(statement, writer=QueuedLibpqWriter(self.cursor))
            )
        self.store._copy_write(self.copy, data)

    def pause(self) -> None:
        if self.open is not None:
            opened, self.open, self.copy = self.open, None, None
            opened.close()
