"""Property: the coverage the database computes is the file path's, for generated records.

Records are drawn over a few days and a few busy hours (nodes of the map and strays, every
probe type, offsets and sub-microsecond digits, aggregated records), written as NDJSON and verified by the file path
(`verify_files`, the fast scan); the same file ingested into SQLite and PostgreSQL and verified
with `verify_stored` must give the same report, for a drawn window: on whole days, where the
stored daily rollups answer, on ten-minute buckets and anywhere (inside one bucket too), where
the days a window edge cuts are answered from the ten-minute rollups of the buckets wholly in
the window and the raw rows of the others. The density rule that decides which buckets get
ten-minute rollup rows is drawn too (always, sometimes, as shipped), so buckets with rollup
rows and buckets marked raw meet in one window.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_support import make_map, unexpected_hash, write_map, write_ndjson

from stella_bundle.coverage import VerifyOptions, verify_files
from stella_bundle.coverage.inputs import iter_records
from stella_bundle.coverage.query import QueryFilter, filter_records, summarise
from stella_bundle.formats.record import PROBE_TYPES
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.store import ingest_ndjson, open_store, query_summary, rollups, verify_stored
from tests.conftest import scaled_examples

UTC = dt.UTC
START = dt.datetime(2026, 1, 20, tzinfo=UTC)
FMAP = make_map()
NODES = [(n.node_hash, n.symbol, n.purl) for n in FMAP.nodes()]
STRAYS = [(unexpected_hash(i), f"stray_{i}", None) for i in range(4)]
_COUNTER = itertools.count()


# Two busy hours, where a few nodes (of the map and strays) share rollup rows (day, node)
# and windows cut through them.
HOT = START + dt.timedelta(days=1, minutes=30)
HOT_SPAN = 2 * 3_600_000_000
HOT_NODES = NODES[:2] + STRAYS[:2]


@st.composite
def timestamps(draw: st.DrawFn, hot: bool) -> tuple[dt.datetime, str]:
    if hot:
        moment = HOT + dt.timedelta(microseconds=draw(st.integers(0, HOT_SPAN)))
    else:
        moment = START + dt.timedelta(microseconds=draw(st.integers(0, 3 * 86_400_000_000)))
    style = draw(st.sampled_from(["canonical", "offset", "nanos", "short"]))
    if style == "offset":
        shifted = moment.astimezone(dt.timezone(dt.timedelta(hours=2)))
        return moment, shifted.isoformat(timespec="microseconds")
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if style == "nanos":
        return moment, text + "999Z"  # truncated to microseconds, like the file path does
    if style == "short":
        return moment.replace(microsecond=0), text[:19] + "Z"
    return moment, text + "Z"


@st.composite
def records(draw: st.DrawFn, only_hot: bool = False) -> dict[str, Any]:
    hot = only_hot or draw(st.booleans())
    node_hash, name, purl = draw(st.sampled_from(HOT_NODES if hot else NODES + STRAYS))
    moment, text = draw(timestamps(hot))
    record: dict[str, Any] = {
        "node_hash": node_hash,
        "function_name": draw(st.sampled_from([name, name + "_v2"])),
        "observed_at": text,
    }
    probe = draw(st.sampled_from((*PROBE_TYPES, None)))
    if probe is not None:
        record["probe_type"] = probe
    if purl is not None and draw(st.booleans()):
        record["purl"] = purl
    if draw(st.booleans()):
        record["count"] = draw(st.integers(1, 1000))
        # Short spans too: a long one makes its ten-minute bucket one an edge cuts.
        span = dt.timedelta(seconds=draw(st.one_of(st.integers(0, 60), st.integers(0, 7200))))
        record["first_observed_at"] = (moment - span).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record["last_observed_at"] = (moment + span).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if draw(st.booleans()):
        record["container_id"] = draw(st.sampled_from(["a" * 64, "b" * 64]))
    return record


# Window edges on whole days (rollup rows wholly in or out), on hours, and anywhere (ragged
# edges: the days they cut are read from the raw rows), often inside the busy hours.
edges = st.one_of(
    st.none(),
    st.integers(-1, 4).map(lambda d: START + dt.timedelta(days=d)),
    st.integers(-1, 4 * 24).map(lambda h: START + dt.timedelta(hours=h)),
    st.integers(-600_000_000, HOT_SPAN + 600_000_000).map(
        lambda us: HOT + dt.timedelta(microseconds=us)
    ),
    st.integers(0, 3 * 86_400_000_000).map(lambda us: START + dt.timedelta(microseconds=us)),
)
# Edges on the ten-minute buckets of the busy hours, or anywhere in them: windows whose days
# are cut, answered from buckets wholly inside and buckets an edge cuts.
FINE = dt.timedelta(minutes=10)
hot_edges = st.one_of(
    st.integers(-1, 13).map(lambda k: HOT + k * FINE),
    st.integers(-600_000_000, HOT_SPAN + 600_000_000).map(
        lambda us: HOT + dt.timedelta(microseconds=us)
    ),
)
# A window inside one ten-minute bucket of the busy hours (an edge cuts it on both sides).
one_bucket = st.tuples(
    st.integers(0, 11), st.integers(0, 600_000_000), st.integers(0, 600_000_000)
).map(
    lambda b: (
        HOT + b[0] * FINE + dt.timedelta(microseconds=min(b[1:])),
        HOT + b[0] * FINE + dt.timedelta(microseconds=max(b[1:])),
    )
)


def _ordered(window: tuple[dt.datetime | None, dt.datetime | None]) -> bool:
    return window[0] is None or window[1] is None or window[0] <= window[1]


windows = st.one_of(
    st.tuples(edges, edges).filter(_ordered),
    st.tuples(hot_edges, st.one_of(st.none(), hot_edges)).filter(_ordered),
    one_bucket,
)


def _fresh_pg(pg_cluster: Any) -> str:
    name = f"prop_{next(_COUNTER)}"
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url: str = pg_cluster.url(name)
    return url


def _same_answers(
    url: str,
    base: Path,
    loaded: Any,
    drawn: list[dict[str, Any]],
    window: tuple[dt.datetime | None, dt.datetime | None],
    fail_on_unexpected: bool,
    dense: int,
) -> None:
    path = write_ndjson(base / f"obs-{next(_COUNTER)}.ndjson", drawn)
    options = VerifyOptions(
        window_from=window[0], window_to=window[1], fail_on_unexpected=fail_on_unexpected
    )
    expected = verify_files(loaded, [path], options)
    with open_store(url, initialise=True) as store:
        if drawn:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(rollups, "DENSE", dense)
                ingest_ndjson(store, [path], batch=7)
        actual = verify_stored(store, loaded, options)
        assert actual.to_dict() == expected.to_dict()
        selection = QueryFilter(
            window_from=options.window_strings()[0], window_to=options.window_strings()[1]
        )
        assert [s.to_dict() for s in query_summary(store, selection)] == [
            s.to_dict() for s in summarise(filter_records(iter_records([path]), selection))
        ]


def _store_url(base: Path, cluster: Any) -> str:
    return (
        f"sqlite:///{base / f's-{next(_COUNTER)}.sqlite'}"
        if cluster is None
        else _fresh_pg(cluster)
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sql_coverage_equals_file_path(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    cluster = request.getfixturevalue("pg_cluster") if backend == "postgres" else None
    base = tmp_path_factory.mktemp("prop")
    loaded = load_function_map(write_map(base / "fm.json"))

    @settings(
        max_examples=scaled_examples(40),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    # Sizes drawn evenly (plain st.lists keeps most lists at a few records): rollup rows
    # holding several records, cut by a window edge, need dozens.
    @given(
        st.integers(0, 60).flatmap(lambda n: st.lists(records(), min_size=n, max_size=n)),
        windows,
        st.booleans(),
        st.sampled_from([0, 2, rollups.DENSE]),
    )
    def check(
        drawn: list[dict[str, Any]],
        window: tuple[dt.datetime | None, dt.datetime | None],
        fail_on_unexpected: bool,
        dense: int,
    ) -> None:
        _same_answers(
            _store_url(base, cluster), base, loaded, drawn, window, fail_on_unexpected, dense
        )

    check()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sql_coverage_in_busy_hours_equals_file_path(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    """Many records in the busy hours only, windows with edges there: the days they cut are
    answered from ten-minute buckets wholly inside (rollup rows), buckets an edge cuts and
    buckets marked raw (raw rows), often all three in one window."""
    cluster = request.getfixturevalue("pg_cluster") if backend == "postgres" else None
    base = tmp_path_factory.mktemp("busy")
    loaded = load_function_map(write_map(base / "fm.json"))

    @settings(
        max_examples=scaled_examples(30),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        st.integers(20, 150).flatmap(
            lambda n: st.lists(records(only_hot=True), min_size=n, max_size=n)
        ),
        st.one_of(
            st.tuples(hot_edges, st.one_of(st.none(), hot_edges)).filter(_ordered), one_bucket
        ),
        st.sampled_from([0, 2, rollups.DENSE]),
    )
    def check(
        drawn: list[dict[str, Any]],
        window: tuple[dt.datetime | None, dt.datetime | None],
        dense: int,
    ) -> None:
        _same_answers(_store_url(base, cluster), base, loaded, drawn, window, False, dense)

    check()


def test_records_come_back_as_given(backend_url: str, tmp_path: Path) -> None:
    """Escapes that COPY's text format and JSON both use survive the round trip."""
    drawn = [
        {
            "node_hash": NODES[0][0],
            "function_name": "é\\t\u2028",
            "observed_at": "2026-01-20T00:00:00+05:30",
            "details": {"argv": ["a\tb", "c\nd"], "path": "\\x"},
            "probe_type": "usdt",
        },
    ]
    path = write_ndjson(tmp_path / "o.ndjson", drawn)
    with open_store(backend_url, initialise=True) as store:
        ingest_ndjson(store, [path])
        assert [r.record for r in store.iter_records()] == drawn
