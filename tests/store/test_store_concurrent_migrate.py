"""`stella store init`, `store migrate` and `observations ingest` (which initialises a new
store) run at once by several processes (a fleet's agents and an operator starting together):
every run succeeds, each schema version is applied once. Before, an `init` reading the schema
between two versions of another run's migration refused the store as "initialised at schema
version 4; run stella store migrate" (PostgreSQL, seen in the first rounds)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stella_bundle
from stella_bundle.store import open_store

# The tree of the stella_bundle under test (its processes run the same code).
REPO = Path(stella_bundle.__file__).resolve().parents[1]
RUNS = 6


def _versions(url: str) -> list[int]:
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            rows = db.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    else:
        import psycopg

        with psycopg.connect(url) as db:
            rows = db.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    return [int(row[0]) for row in rows]


def _run_together(commands: list[list[str]]) -> list[tuple[int, str]]:
    runs = [
        subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]
    return [(run.wait(timeout=300), run.communicate()[1].decode()) for run in runs]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_init_ingest_and_migrate_apply_each_version_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sources = []
    for index in range(RUNS // 2):  # files of their own: the same file twice at once is
        # refused by design ("another ingest stored some of these chunks meanwhile")
        sources.append(tmp_path / f"r{index}.ndjson")
        record = {
            "node_hash": "sha256:" + f"{index:064d}",
            "function_name": f"f{index}",
            "probe_type": "uprobe",
            "observed_at": "2026-01-23T10:00:00.000000Z",
        }
        sources[-1].write_text(json.dumps(record) + "\n")
    stella = [sys.executable, "-m", "stella_bundle"]
    for round_ in range(1):
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'store{round_}.sqlite'}"
        else:
            cluster = request.getfixturevalue("pg_cluster")
            url = str(cluster.create_database(f"concurrent_{os.getpid()}_{round_}"))
        started = [[*stella, "store", "init", "--store", url] for _ in range(RUNS // 2)]
        started += [
            [*stella, "observations", "ingest", str(source), "--store", url] for source in sources
        ]
        results = _run_together(started)
        assert all(code == 0 for code, _ in results), results
        # And migrate, twice at once, on the store now current: nothing to apply, both succeed.
        again = _run_together([[*stella, "store", "migrate", "--store", url]] * 2)
        assert all(code == 0 for code, _ in again), again
        with open_store(url) as store:
            latest = store.latest_version()
            assert store.status().records == RUNS // 2
        assert _versions(url) == list(range(1, latest + 1))


def test_init_waits_for_a_migration_in_progress(pg_url: str) -> None:
    """A run between two versions of its migration (simulated: it holds the migration lock and
    has the last version's row uncommitted): `store init` waits for it, then finds the store
    current. Before, it read the version in between and refused the store as "initialised at
    schema version N; run stella store migrate"."""
    import psycopg

    from stella_bundle.store.postgres import _MIGRATION_LOCK

    with open_store(pg_url, initialise=True) as store:
        latest = store.latest_version()
    with psycopg.connect(pg_url, autocommit=True) as other:
        row = other.execute(
            "DELETE FROM schema_migrations WHERE version = %s RETURNING description, applied_at",
            (latest,),
        ).fetchone()
        other.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        other.execute("BEGIN")
        other.execute(
            "INSERT INTO schema_migrations VALUES (%s, %s, %s)", (latest, *(row or ("", None)))
        )
        init = subprocess.Popen(
            [sys.executable, "-m", "stella_bundle", "store", "init", "--store", pg_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Until it has either answered or queued for the lock (however slow its start).
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            deadline = time.monotonic() + 120
            waiting = False
            while init.poll() is None and time.monotonic() < deadline and not waiting:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()
                waiting = bool(row and row[0])
                time.sleep(0.05)
        code = init.poll()
        other.execute("COMMIT")
        other.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        _, err = init.communicate(timeout=120)
    assert waiting and code is None, (code, err.decode())  # it waited, not refused
    assert init.returncode == 0, err.decode()
    assert _versions(pg_url) == list(range(1, latest + 1))


def test_ingests_creating_the_same_partition_at_once(pg_url: str) -> None:
    """Two creations of one day's partition racing (another ingest's CREATE not yet
    committed): the second is not an error. Before: "internal error: DuplicateTable: relation
    observations_p… already exists", exit 3 (IF NOT EXISTS does not cover a race)."""
    import datetime as dt
    import threading

    import psycopg

    day = dt.date(2026, 1, 23)
    with open_store(pg_url, initialise=True) as store:
        store.ensure_partitions(())  # today's and tomorrow's, so only `day` is made below
    failures: list[BaseException] = []
    with psycopg.connect(pg_url) as other:  # a transaction: the creation uncommitted
        other.execute(
            "CREATE TABLE observations_p20260123 PARTITION OF observations "
            "FOR VALUES FROM ('2026-01-23T00:00:00Z') TO ('2026-01-24T00:00:00Z')"
        )

        def create() -> None:
            try:
                with open_store(pg_url) as racing:
                    racing.ensure_partitions([day])
            except BaseException as exc:  # reported below, in the test's thread
                failures.append(exc)

        racer = threading.Thread(target=create)
        racer.start()
        racer.join(timeout=2)  # it waits on the uncommitted creation's lock
        assert racer.is_alive()
        other.commit()
    racer.join(timeout=60)
    assert not racer.is_alive() and failures == [], failures
    with open_store(pg_url) as store:
        assert "observations_p20260123" in store.partitions()
