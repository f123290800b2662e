"""PostgreSQL: day partitions made by the store, retention by dropping them, and a server
stopped in the middle of an ingest (one-line error naming the store, exit 2, nothing kept,
the retry completes)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from store_support import (
    NoRollups,
    make_map,
    observations,
    rollup_tables,
    write_chain,
    write_map,
)

from stella_bundle.coverage import VerifyOptions
from stella_bundle.coverage.query import QueryFilter
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.store import ingest_evidence, open_store, query_summary, verify_stored
from stella_bundle.store.postgres import PostgresStore, partition_name
from stella_bundle.timeutil import utc_now

UTC = dt.UTC
DAYS = [dt.date(2026, 1, 20) + dt.timedelta(days=n) for n in range(5)]


@pytest.fixture
def five_days(tmp_path: Path, test_keys: Any) -> Path:
    records = observations(make_map(), days=5)
    return write_chain(tmp_path / "evidence", "chain-5", records, test_keys.signer("collector"))


def test_five_days_five_partitions_prune_three(
    pg_url: str,
    five_days: Path,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stella_bundle.store import rollups

    monkeypatch.setattr(rollups, "DENSE", 0)  # every ten-minute bucket rolled up
    root = TrustRoot.load(test_keys.trust_root)
    loaded = load_function_map(write_map(tmp_path / "fm.json"))
    sqlite_url = f"sqlite:///{tmp_path / 'peer.sqlite'}"
    assert run_cli("store", "init", "--store", pg_url).exit_code == 0
    with open_store(pg_url) as store:
        assert isinstance(store, PostgresStore)
        ahead = set(store.partitions())
        today = utc_now().date()
        # Made ahead by the store: today and tomorrow exist before any data arrives.
        assert ahead == {partition_name(today), partition_name(today + dt.timedelta(days=1))}
        ingest_evidence(store, five_days, root)
        made = set(store.partitions()) - ahead
        assert made == {partition_name(day) for day in DAYS}
        remaining = QueryFilter(window_from="2026-01-23T00:00:00.000000Z")
        before_summary = [s.to_dict() for s in query_summary(store, remaining)]
        window = VerifyOptions(window_from=dt.datetime(2026, 1, 23, tzinfo=UTC))
        before_report = verify_stored(store, loaded, window).to_dict()
        per_day = {
            day: sum(
                1
                for r in store.iter_records()
                if r.record["observed_at"].startswith(day.isoformat())
            )
            for day in DAYS
        }
    with open_store(sqlite_url, initialise=True) as peer:
        ingest_evidence(peer, five_days, root)
    # --older-than so that the cutoff falls on 2026-01-23 (before noon): days 20, 21, 22 go.
    hours = int((utc_now() - dt.datetime(2026, 1, 23, 12, tzinfo=UTC)).total_seconds() // 3600)
    pruned = run_cli(
        "observations", "prune", "--store", pg_url, "--older-than", f"{hours}h", "--format", "json"
    )
    assert pruned.exit_code == 0, pruned.stderr
    result = json.loads(pruned.stdout)
    assert result["cutoff"] == "2026-01-23T00:00:00.000000Z"
    assert [p["name"] for p in result["partitions_dropped"]] == [
        partition_name(day) for day in DAYS[:3]
    ]
    assert [p["records"] for p in result["partitions_dropped"]] == [per_day[d] for d in DAYS[:3]]
    assert result["records_removed"] == sum(per_day[d] for d in DAYS[:3])
    # The embedded store prunes the same days.
    peer_pruned = run_cli(
        "observations",
        "prune",
        "--store",
        sqlite_url,
        "--older-than",
        f"{hours}h",
        "--format",
        "json",
    )
    assert json.loads(peer_pruned.stdout)["records_removed"] == result["records_removed"]
    with open_store(pg_url) as store:
        assert isinstance(store, PostgresStore)
        assert set(store.partitions()) - ahead == {partition_name(day) for day in DAYS[3:]}
        assert [s.to_dict() for s in query_summary(store, remaining)] == before_summary
        after_report = verify_stored(store, loaded, window).to_dict()
        # Only the count of records read outside the window changed: those were pruned.
        assert after_report["records"]["in_window"] == before_report["records"]["in_window"]
        assert after_report["records"]["outside_window"] == 0
        after_report.pop("records"), before_report.pop("records")
        # So did the count of records read in scope (the map declares none: every record).
        for report in (after_report, before_report):
            scope = report.get("scope")
            if scope is not None:
                scope.pop("records_in_scope"), scope.pop("records_out_of_scope")
        assert after_report == before_report
        # Pruned chunks stay recorded: the same evidence offered again adds nothing.
        again = ingest_evidence(store, five_days, root)
        assert again.records_stored == 0 and again.chunks_already_stored > 0
        assert store.status().records == sum(per_day[d] for d in DAYS[3:])
        # The rollups of the dropped days went with them, in the same transaction: daily and
        # ten-minute rows, and the ten-minute buckets.
        for table in ("node_rollups", "fine_rollups"):
            assert store.db.execute(
                f"SELECT min(bucket) >= '2026-01-23T00:00:00Z', sum(records) FROM {table}"
            ).fetchone() == (True, store.status().records)
        assert store.db.execute(
            "SELECT min(bucket) >= '2026-01-23T00:00:00Z', count(*) > 0 FROM fine_buckets"
        ).fetchone() == (True, True)
    with open_store(sqlite_url) as peer:
        for table in ("node_rollups", "fine_rollups"):
            assert peer.db.execute(  # type: ignore[attr-defined]
                f"SELECT min(bucket) >= '2026-01-23', sum(records) FROM {table}"
            ).fetchone() == (1, peer.status().records)
        assert peer.db.execute(  # type: ignore[attr-defined]
            "SELECT min(bucket) >= '2026-01-23', count(*) > 0 FROM fine_buckets"
        ).fetchone() == (1, 1)


def test_server_stopped_during_ingest(
    pg_cluster: Any,
    pg_url: str,
    five_days: Path,
    test_keys: Any,
    run_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = (
        "observations",
        "ingest",
        "--evidence",
        five_days,
        "--trust-root",
        test_keys.trust_root,
        "--store",
        pg_url,
    )
    assert run_cli("store", "init", "--store", pg_url).exit_code == 0
    original = PostgresStore._copy_write
    writes = []

    def copy_then_stop(self: PostgresStore, copy: Any, data: bytes) -> None:
        writes.append(len(data))
        if len(writes) == 2:
            pg_cluster.stop("fast")  # the COPY has begun: the server goes away
        original(self, copy, data)

    monkeypatch.setattr(PostgresStore, "_copy_write", copy_then_stop)
    try:
        failed = run_cli(*args)
    finally:
        monkeypatch.setattr(PostgresStore, "_copy_write", original)
        pg_cluster.start()
    assert failed.exit_code == 2
    # Stopped in the middle: a block of this transaction's COPY had been sent already.
    assert len(writes) >= 2
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith(f"error: store {pg_url}: ingest interrupted, nothing written")
    with open_store(pg_url) as store:
        status = store.status()
        assert (status.records, status.chunks) == (0, 0)  # the transaction was rolled back
    retried = run_cli(*args, "--format", "json")
    assert retried.exit_code == 0, retried.stderr
    stored = json.loads(retried.stdout)
    with open_store(pg_url) as store:
        status = store.status()
        assert status.records == stored["records_stored"] > 0
        assert status.chunks == stored["chunks_stored"]


def test_server_down_is_one_line_naming_the_store(pg_cluster: Any, run_cli: Any) -> None:
    url = pg_cluster.url("nosuchdb")
    done = run_cli("store", "status", "--store", url)
    assert done.exit_code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: store {url}: cannot connect")


def test_migrations_are_versioned(pg_url: str, run_cli: Any) -> None:
    fresh = run_cli("store", "status", "--store", pg_url, "--format", "json")
    assert fresh.exit_code == 2
    assert json.loads(fresh.stdout)["pending_migrations"] == [1, 2, 3, 4, 5]
    needs_init = run_cli("observations", "query", "--store", pg_url)
    assert needs_init.exit_code == 2 and "not initialised" in needs_init.stderr
    assert run_cli("store", "migrate", "--store", pg_url).exit_code == 0
    again = run_cli("store", "migrate", "--store", pg_url, "--format", "json")
    assert json.loads(again.stdout)["applied"] == []
    done = run_cli("store", "status", "--store", pg_url, "--format", "json")
    assert done.exit_code == 0
    status = json.loads(done.stdout)
    assert (status["schema_version"], status["pending_migrations"]) == (5, [])


def test_migrations_2_to_5_on_a_store_with_data(
    pg_url: str,
    pg_cluster: Any,
    five_days: Path,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A version-1 store holding aggregated records is migrated: the span bounds and the
    rollups come from the stored rows (the daily and ten-minute rollups exactly those an
    ingest at the latest version builds with every bucket rolled up, the BRIN index made),
    and window answers stay the file path's."""
    from stella_bundle.coverage import verify_observations
    from stella_bundle.coverage.inputs import iter_evidence_records
    from stella_bundle.store import postgres, rollups

    root = TrustRoot.load(test_keys.trust_root)
    loaded = load_function_map(write_map(tmp_path / "fm.json"))
    with monkeypatch.context() as patch:
        patch.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:1])
        patch.setattr(postgres, "LATEST", 1)
        with open_store(pg_url, initialise=True) as store:
            assert store.schema_version() == 1
            # Version 1 has no span bounds: a store of that version ingests without them.
            patch.setattr(PostgresStore, "_window", _v1_window)
            patch.setattr(postgres, "copy_lines", _v1_copy_lines(postgres.copy_lines))
            patch.setattr(postgres, "Rollups", NoRollups)
            ingest_evidence(store, five_days, root)
    old = run_cli("observations", "query", "--store", pg_url)
    assert old.exit_code == 2 and "store migrate" in old.stderr
    migrated = run_cli("store", "migrate", "--store", pg_url, "--format", "json")
    assert json.loads(migrated.stdout)["applied"] == [2, 3, 4, 5]
    fresh_url = pg_cluster.create_database(f"fresh_{tmp_path.name}".lower())
    with open_store(fresh_url, initialise=True) as fresh:
        monkeypatch.setattr(rollups, "DENSE", 0)
        ingest_evidence(fresh, five_days, root)
        built = rollup_tables(fresh)
    with open_store(pg_url) as store:
        assert isinstance(store, PostgresStore)
        assert rollup_tables(store) == built and all(built)
        brin = store.db.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%USING brin (observed_at)%'"
        ).fetchone()
        assert brin is not None and brin[0] == 1 + len(store.partitions())
        bounds = store.db.execute("SELECT before_us, after_us FROM span_bounds").fetchone()
        assert bounds == (0, 30_000_000)  # aggregated records last 30 s from observed_at
        # Windows with ragged edges: on days, inside a ten-minute bucket, inside one bucket.
        for low, high in (
            ((21, 23, 59, 45), (22, 12, 0, 0)),
            ((22, 23, 59, 45), (23, 12, 17, 30)),
            ((20, 23, 59, 45), (24, 12, 40, 0)),
            ((22, 6, 31, 0), (22, 6, 38, 59)),
        ):
            options = VerifyOptions(
                window_from=dt.datetime(2026, 1, *low, tzinfo=UTC),
                window_to=dt.datetime(2026, 1, *high, tzinfo=UTC),
            )
            expected = verify_observations(
                loaded, iter_evidence_records(five_days), options, validated=True
            )
            assert verify_stored(store, loaded, options).to_dict() == expected.to_dict()


def _v1_window(
    self: PostgresStore, cursor: Any, window_from: str | None, window_to: str | None
) -> tuple[str, dict[str, Any]]:
    clauses, params = ["TRUE"], {}
    if window_from is not None:
        clauses.append("obs_end >= %(f)s::timestamptz")
        params["f"] = window_from
    if window_to is not None:
        clauses.append("obs_start <= %(t)s::timestamptz")
        params["t"] = window_to
    return " AND ".join(clauses), params


def _v1_copy_lines(real: Any) -> Any:
    def copy_lines(chunk: Any) -> Any:
        text, days, _ = real(chunk)
        return text, days, (0, 0)

    return copy_lines


def test_a_window_scans_only_the_partitions_it_can_reach(
    pg_url: str, five_days: Path, test_keys: Any
) -> None:
    root = TrustRoot.load(test_keys.trust_root)
    with open_store(pg_url, initialise=True) as store:
        assert isinstance(store, PostgresStore)
        ingest_evidence(store, five_days, root)
        with store.db.transaction(), store.db.cursor() as cursor:
            where, params = store._window(
                cursor, "2026-01-23T06:00:00.000000Z", "2026-01-23T12:00:00.000000Z"
            )
            cursor.execute("EXPLAIN SELECT count(*) FROM observations WHERE " + where, params)
            plan = "\n".join(row[0] for row in cursor)
        scanned = {name for name in store.partitions() if name in plan}
        assert scanned == {partition_name(dt.date(2026, 1, 23))}, plan
