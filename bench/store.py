"""Store ingest: 1,000,000 records from sealed chunks into PostgreSQL and SQLite, each against
its database's own bulk loader on the same rows, in the same run.

- PostgreSQL: `ingest_evidence` (chain verified with the trust root, chunks read and checked
  against their seals, one transaction, COPY) vs `psql -c "\\copy observations FROM file.csv"`
  of the same rows (same partitioned table, partitions already there).
- SQLite: `ingest_evidence` into the embedded store vs the `sqlite3` CLI `.import` of the same
  CSV into the same table (same indexes).

Every repeat starts from an empty, initialised store; the runs are interleaved (ours, peer,
ours, peer…) so load on the machine hits both alike, and medians are printed. Target (issue
11): each ratio <= 1.5. The chain (a real one, written by the evidence writer and signed) and
the peers' CSV are kept in --workdir between runs under a digest of what makes them (size, the
generator, the writer, formats and row code), written again when that changes; not timed.

    python3 bench/store.py [--records 1000000] [--repeat 2] [--workdir /tmp/stella-bench-store]
    python3 bench/store.py --verify [--verify-records 1000000] [--paths 10000] [--repeat 3]
    python3 bench/store.py --verify --verify-records 10000000   # issue 11's size (long)

`--verify` instead compares `function-map verify --store` (the coverage aggregation in the
database from the daily rollups, the ten-minute rollups of the days a window edge cuts and the
raw rows of the buckets it cuts, the verdict by the file path's `evaluate`) on PostgreSQL and SQLite with DuckDB answering the same coverage question
over the same rows exported to Parquet (bench/verify.py's map and records; issue 11's target:
<= 2x DuckDB), twice: over the whole store, and over a window whose both ends cut a day.
The records, the SQLite store and the Parquet file are kept in --workdir, each under a digest
of its inputs (size, generators, store code and schema version, export), so a change makes them
again; PostgreSQL is loaded again each run (untimed). The default size is 1M (a
10M run takes most of an hour here: writing, loading and exporting 10M rows).

Needs PostgreSQL 15 binaries (/usr/lib/postgresql/15/bin), psql and sqlite3; as root the
private cluster runs as the `postgres` user.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import inspect
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stella_bundle.attest.keys import generate_key, load_signer  # noqa: E402
from stella_bundle.digests import file_sha256  # noqa: E402
from stella_bundle.evidence.config import WriterConfig  # noqa: E402
from stella_bundle.evidence.encoding import encode_record  # noqa: E402
from stella_bundle.evidence.writer import ChunkWriter  # noqa: E402
from stella_bundle.formats.seal import CollectorInfo  # noqa: E402
from stella_bundle.formats.trust_root import TrustRoot  # noqa: E402
from stella_bundle.store import ingest_evidence, open_store  # noqa: E402
from stella_bundle.store.base import COLUMNS, Provenance, StoreChunk  # noqa: E402
from stella_bundle.store.ingest import chain_chunks, ndjson_chain_id, verify_chains  # noqa: E402
from stella_bundle.store.rows import chunk_rows, fast_decode  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CHUNK_RECORDS = 100_000
DAYS = 3


def sources_digest(*parts: object) -> str:
    """A digest of what a kept input is made from: the values given, and the source of the
    functions and of the packages' modules among them, so a changed writer, format or row
    layout makes a new input instead of measuring a stale one."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):  # a module, or a package folder: every module in it
            for module in [part] if part.is_file() else sorted(part.rglob("*.py")):
                digest.update(str(module.relative_to(REPO)).encode() + module.read_bytes())
        elif callable(part):
            digest.update(inspect.getsource(part).encode())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


def keep_one(workdir: Path, prefix: str, keep: Path) -> None:
    """Drop the other kept inputs of this kind (other digests): each is hundreds of MB."""
    for stale in workdir.glob(f"{prefix}*"):
        if not stale.name.startswith(keep.name):  # (its own -wal, -shm, .part stay)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink()


PACKAGE = REPO / "stella_bundle"


def make_chain(workdir: Path, records: int) -> tuple[Path, Path]:
    """(evidence dir, trust root): kept between runs under a digest of their inputs (size, this
    generator, the evidence writer and the formats), written again when one changes."""
    key = sources_digest(
        records, CHUNK_RECORDS, DAYS, make_chain, PACKAGE / "evidence", PACKAGE / "formats"
    )
    folder = workdir / f"chain-{records}-{key}"
    evidence, root_path = folder / "evidence", folder / "trust-root.json"
    if (folder / "complete").exists():
        return evidence, root_path
    keep_one(workdir, f"chain-{records}-", folder)
    shutil.rmtree(folder, ignore_errors=True)  # an earlier run stopped half-way
    folder.mkdir(parents=True)
    generated = generate_key("ed25519", folder / "collector", None)
    root = TrustRoot(expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=365))
    root.add_key(generated.public_key, ["collector"])
    root.save(root_path)
    signer = load_signer(folder / "collector.key")
    hashes = ["sha256:" + hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    config = WriterConfig(max_records=CHUNK_RECORDS, max_size_mb=1024)
    collector = CollectorInfo("bench", "host-1", None, "0.1.0", None)
    started = time.perf_counter()
    step = DAYS * 86_400_000_000 // records  # microseconds between records
    days = [f"{dt.date(2026, 1, 20) + dt.timedelta(days=n):%Y-%m-%d}" for n in range(DAYS + 1)]

    def observed_at(i: int) -> str:
        day, micros = divmod(i * step, 86_400_000_000)
        seconds, micro = divmod(micros, 1_000_000)
        minutes, second = divmod(seconds, 60)
        return f"{days[day]}T{minutes // 60:02d}:{minutes % 60:02d}:{second:02d}.{micro:06d}Z"

    def record(i: int) -> dict[str, Any]:
        return {
            "node_hash": hashes[i % 5000],
            "function_name": f"fn_{i % 5000}",
            "probe_type": "uprobe",
            "observed_at": observed_at(i),
            "purl": "pkg:deb/debian/openssl@3.0.11",
            "pid": 1000 + i % 17,
            "comm": "svc",
        }

    # The records' canonical lines assembled from their parts and added a batch at a time
    # (append_encoded_run): the writer's per-record validation and strftime took most of the
    # 16 s this took; each batch's first line is checked against the writer's own encoding.
    batch = 1000
    with ChunkWriter.open(evidence, "bench", signer, config, collector) as writer:
        for first in range(0, records, batch):
            numbers = range(first, min(first + batch, records))
            stamps = [observed_at(i) for i in numbers]
            lines = [
                f'{{"comm":"svc","function_name":"fn_{i % 5000}","node_hash":"'
                f'{hashes[i % 5000]}","observed_at":"{at}","pid":{1000 + i % 17},'
                '"probe_type":"uprobe","purl":"pkg:deb/debian/openssl@3.0.11"}'
                for i, at in zip(numbers, stamps, strict=True)
            ]
            if lines[0].encode() != encode_record(record(first)):
                raise SystemExit(f"bench/store.py: line {first} is not the writer's encoding")
            writer.append_encoded_run(
                "\n".join(lines).encode(), "\n".join(stamps), len(lines), stamps[0], stamps[-1]
            )
    (folder / "complete").touch()
    print(f"chain written: {records} records in {time.perf_counter() - started:.1f} s (untimed)")
    return evidence, root_path


def write_csv(evidence: Path, root: TrustRoot, path: Path) -> int:
    """The very rows the store writes, as CSV for the peers (csv writes None as empty)."""
    count = 0
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        for chain in verify_chains(evidence, root):
            for chunk in chain_chunks(chain):
                rows = list(chunk_rows(chunk))
                out.writerows(rows)
                count += len(rows)
    return count


class Cluster:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="stella-bench-pg-"))
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(self.base, self.user, self.user)
        self.port = 6400 + os.getpid() % 500
        self.run(str(PG_BIN / "initdb"), "-D", str(self.base / "data"), "-U", "postgres",
                 "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")  # fmt: skip
        self.run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-l",
            str(self.base / "log"), "-w", "-o",
            f"-k {self.base} -c listen_addresses='' -p {self.port} -c max_wal_size=4GB",
            "start",
        )  # fmt: skip
        self.databases = 0

    def run(self, *args: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *args], check=True, capture_output=True)

    def url(self, name: str) -> str:
        return f"postgresql:///{name}?host={self.base}&port={self.port}&user=postgres"

    def fresh(self) -> str:
        self.databases += 1
        name = f"bench{self.databases}"
        subprocess.run(
            ["createdb", "-h", str(self.base), "-p", str(self.port), "-U", "postgres", name],
            check=True,
        )
        return self.url(name)

    def stop(self) -> None:
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


DUCKDB_COVERAGE = """
WITH obs AS (
    SELECT node_hash, sum("count") AS hits, min(obs_start) AS first_seen,
           max(obs_end) AS last_seen, list(DISTINCT probe_type) AS probe_types
    FROM read_parquet('{rows}')
    WHERE {where}
    GROUP BY node_hash
),
per_path AS (
    SELECT p.path_id, count(*) AS total, count(obs.node_hash) AS observed
    FROM read_json('{nodes}') AS p LEFT JOIN obs USING (node_hash)
    GROUP BY p.path_id
)
SELECT
    (SELECT count(*) FROM per_path WHERE observed = total) AS observed_paths,
    (SELECT count(*) FROM obs ANTI JOIN (SELECT DISTINCT node_hash FROM read_json('{nodes}')) AS m
        USING (node_hash)) AS unexpected_nodes,
    (SELECT count(*) FROM read_parquet('{rows}') WHERE {where}) AS in_window
"""


def load_ndjson(store: Any, ndjson: Path, chunk_records: int = 100_000) -> int:
    """The bench's NDJSON (canonical lines) into a store in one streamed transaction of
    unsigned chunks through the fast reader: `ingest_ndjson` keeps every record of a file in
    memory as a dict, which 10,000,000 records do not fit."""
    file_sha = file_sha256(ndjson)
    chain = ndjson_chain_id(file_sha)

    def chunks() -> Iterator[StoreChunk]:
        with ndjson.open("rb") as handle:
            for sequence in itertools.count(1):
                lines = list(itertools.islice(handle, chunk_records))
                if not lines:
                    return
                decoded = fast_decode(chain, sequence, b"".join(lines))
                if decoded is None:
                    raise SystemExit(f"{ndjson}: not the fast reader's canonical lines")
                yield StoreChunk(Provenance(chain, sequence, file_sha, (), False), prepared=decoded)

    return int(store.store_chunks(chunks()).records_stored)


def export_parquet(sqlite_url: str, work: Path, parquet: Path) -> None:
    """The stored rows, as the store holds them, to Parquet for DuckDB (via CSV)."""
    import duckdb

    rows_csv = work / "rows.csv"
    with open_store(sqlite_url) as store, rows_csv.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(COLUMNS)
        cursor = store.db.execute(f"SELECT {', '.join(COLUMNS)} FROM observations")  # type: ignore[attr-defined]
        while batch := cursor.fetchmany(100_000):
            out.writerows(batch)
    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_csv('{rows_csv}', header=true)) "
        f"TO '{parquet}.part' (FORMAT parquet)"
    )
    os.replace(f"{parquet}.part", parquet)
    rows_csv.unlink()


def bench_verify(args: argparse.Namespace) -> None:
    import duckdb
    import verify as file_bench  # bench/verify.py: the same map and records as the file bench

    from stella_bundle.coverage import VerifyOptions
    from stella_bundle.functionmap.load import load_function_map
    from stella_bundle.store import verify_stored
    from stella_bundle.store.sqlite import LATEST

    records = args.verify_records
    # Kept between runs, each under a digest of what makes it: the records and map (size and
    # bench/verify.py's generators), the SQLite store (those, the store code, the schema
    # version), the Parquet file (the store's key and the export).
    key = sources_digest(
        records, args.paths, file_bench.node_hashes, file_bench.write_map,
        file_bench.write_observations,
    )  # fmt: skip
    work = args.workdir / f"verify-{records}-{args.paths}-{key}"
    keep_one(args.workdir, f"verify-{records}-{args.paths}-", work)
    work.mkdir(parents=True, exist_ok=True)
    hashes = file_bench.node_hashes(2 * args.paths)
    map_path, nodes_path = file_bench.write_map(work, args.paths, hashes)
    ndjson = work / "observations.ndjson"
    if not ndjson.exists():
        started = time.perf_counter()
        file_bench.write_observations(work / "observations.part", records, hashes)
        os.replace(work / "observations.part", ndjson)
        print(f"records written in {time.perf_counter() - started:.0f} s (untimed)", flush=True)
    loaded = load_function_map(map_path)
    # The records are 1 ms apart from 2026-01-23T00:00:00Z (bench/verify.py), all on one day:
    # the windowed question cuts that day at both ends, and a ten-minute bucket at each end
    # (answered from their raw rows, the buckets between from their rollups).
    span = dt.timedelta(milliseconds=records)
    base = dt.datetime(2026, 1, 23, tzinfo=dt.UTC)
    window = (
        base + span * 0.15 + dt.timedelta(seconds=17.123456),
        base + span * 0.85 + dt.timedelta(seconds=3.5),
    )
    questions = {
        "whole store": (VerifyOptions(), "TRUE"),
        "window": (
            VerifyOptions(window_from=window[0], window_to=window[1]),
            f"obs_end >= '{window[0].isoformat()}'::TIMESTAMPTZ "
            f"AND obs_start <= '{window[1].isoformat()}'::TIMESTAMPTZ",
        ),
    }
    cluster = Cluster()
    try:
        # The SQLite store is kept between runs (per schema version); PostgreSQL's cluster is
        # made anew each run, so it is loaded again.
        store_key = sources_digest(key, LATEST, PACKAGE / "store", load_ndjson)
        sqlite_file = work / f"store-{store_key}.sqlite"
        keep_one(work, "store-", sqlite_file)
        urls = {"postgres": cluster.fresh(), "sqlite": f"sqlite:///{sqlite_file}"}
        for name, url in urls.items():
            with open_store(url, initialise=True) as store:
                if store.status().records == records:
                    continue
                started = time.perf_counter()
                stored = load_ndjson(store, ndjson)
                print(
                    f"{name}: {stored} records stored in "
                    f"{time.perf_counter() - started:.1f} s (untimed)",
                    flush=True,
                )
        parquet = work / f"rows-{sources_digest(store_key, export_parquet)}.parquet"
        keep_one(work, "rows-", parquet)
        if not parquet.exists():
            started = time.perf_counter()
            export_parquet(urls["sqlite"], work, parquet)
            print(f"rows exported in {time.perf_counter() - started:.0f} s (untimed)", flush=True)
        times: dict[tuple[str, str], list[float]] = {}
        answers: dict[tuple[str, str], tuple[int, int, int]] = {}
        loads = []
        for _ in range(args.repeat):
            loads.append(os.getloadavg()[0])
            for question, (options, where) in questions.items():
                for name, url in urls.items():
                    with open_store(url) as store:
                        started = time.perf_counter()
                        result = verify_stored(store, loaded, options)
                        times.setdefault((question, name), []).append(time.perf_counter() - started)
                    observed = sum(
                        1 for p in result.per_path_breakdown if p["status"] == "observed"
                    )
                    in_window = result.to_dict()["records"]["in_window"]
                    answers[question, name] = (observed, len(result.unexpected_symbols), in_window)
                query = DUCKDB_COVERAGE.format(rows=parquet, nodes=nodes_path, where=where)
                started = time.perf_counter()
                row = duckdb.connect().execute(query).fetchone()
                times.setdefault((question, "duckdb"), []).append(time.perf_counter() - started)
                assert row is not None
                answers[question, "duckdb"] = (int(row[0]), int(row[1]), int(row[2]))
    finally:
        cluster.stop()
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\n{records:,} stored records, {args.paths}-path map, medians of {args.repeat} "
        f"interleaved repeats (the verdict included on our side), load average "
        f"{min(loads):.1f}-{max(loads):.1f} (1 min, 2 cores):"
    )
    for question in questions:
        duck = median[question, "duckdb"]
        for name in ("postgres", "sqlite"):
            ours = median[question, name]
            print(
                f"  {question}: verify --store {name}: {ours:.2f} s; DuckDB over Parquet "
                f"{duck:.2f} s; ratio {ours / duck:.2f} (target <= 2)"
            )
    print(f"  window: {window[0].isoformat()} .. {window[1].isoformat()}")
    print(f"  answers (observed paths, unexpected nodes, records in window): {answers}")
    for question in questions:
        if len({v for k, v in answers.items() if k[0] == question}) != 1:
            raise SystemExit(f"the store and DuckDB disagree ({question})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    # Ingest: two repeats of ~40 s, each repeat's ratios printed (stop 20's three: PostgreSQL
    # 1.40/1.39/1.40, SQLite 1.02/1.11/1.04; the median of two is their mean). --verify: 3.
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "stella-bench-store"
    )
    parser.add_argument("--verify", action="store_true", help="bench verify --store instead")
    parser.add_argument("--verify-records", type=int, default=1_000_000)
    parser.add_argument("--paths", type=int, default=10_000)
    args = parser.parse_args()
    if args.repeat is None:
        args.repeat = 3 if args.verify else 2
    if args.verify:
        args.workdir.mkdir(parents=True, exist_ok=True)
        bench_verify(args)
        return
    for tool in ("psql", "sqlite3", "createdb"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/store.py: {tool} not found (scripts/setup.sh installs postgresql)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    evidence, root_path = make_chain(args.workdir, args.records)
    root = TrustRoot.load(root_path)
    # The peers' CSV: the chain's rows as the store writes them (the chain's digest, the row
    # code and the columns name it).
    key = sources_digest(evidence.parent.name, COLUMNS, write_csv, PACKAGE / "store" / "rows.py")
    rows_csv = args.workdir / f"rows-{args.records}-{key}.csv"
    if not rows_csv.exists():
        keep_one(args.workdir, f"rows-{args.records}-", rows_csv)
        started = time.perf_counter()
        write_csv(evidence, root, rows_csv.with_suffix(".part"))
        rows_csv.with_suffix(".part").replace(rows_csv)
        print(f"rows written as CSV in {time.perf_counter() - started:.1f} s (untimed)")
    os.chmod(args.workdir, 0o755)  # psql runs as us, but keep the CSV readable
    cluster = Cluster()
    columns = ", ".join(COLUMNS)
    results: dict[str, list[float]] = {k: [] for k in ("pg", "psql", "sqlite", "sqlite3")}
    try:
        for repeat in range(args.repeat):
            url = cluster.fresh()
            with open_store(url, initialise=True) as store:
                results["pg"].append(timed(lambda s=store: ingest_evidence(s, evidence, root)))
                assert store.status().records == args.records
            url = cluster.fresh()
            with open_store(url, initialise=True) as store:
                # The peer gets the same table with the partitions already made (untimed).
                store.ensure_partitions(  # type: ignore[attr-defined]
                    [dt.date(2026, 1, 20) + dt.timedelta(days=n) for n in range(DAYS + 1)]
                )
            copy = f"\\copy observations ({columns}) FROM '{rows_csv}' WITH (FORMAT csv)"
            results["psql"].append(
                timed(lambda u=url, c=copy: subprocess.run(["psql", "-q", u, "-c", c], check=True))
            )
            db = args.workdir / f"ours-{repeat}.sqlite"
            peer = args.workdir / f"peer-{repeat}.sqlite"
            for path in (db, peer):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            with open_store(f"sqlite:///{db}", initialise=True) as store:
                results["sqlite"].append(timed(lambda s=store: ingest_evidence(s, evidence, root)))
            open_store(f"sqlite:///{peer}", initialise=True).close()
            results["sqlite3"].append(
                timed(
                    lambda p=peer: subprocess.run(
                        ["sqlite3", str(p), ".mode csv", f".import {rows_csv} observations"],
                        check=True,
                    )
                )
            )
            print(
                f"repeat {repeat + 1}: "
                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items())
                + f"; ratios {results['pg'][-1] / results['psql'][-1]:.2f}, "
                f"{results['sqlite'][-1] / results['sqlite3'][-1]:.2f}",
                flush=True,
            )
    finally:
        cluster.stop()
    median = {k: statistics.median(v) for k, v in results.items()}
    n = args.records
    print(f"\n{n} records, medians of {args.repeat} interleaved repeats:")
    for ours, peer, label in (("pg", "psql", "PostgreSQL"), ("sqlite", "sqlite3", "SQLite")):
        ratio = median[ours] / median[peer]
        print(
            f"  {label}: stella ingest {median[ours]:.2f} s ({n / median[ours]:,.0f} rec/s), "
            f"{peer} bulk load {median[peer]:.2f} s; ratio {ratio:.2f} (target <= 1.5)"
        )


if __name__ == "__main__":
    main()
