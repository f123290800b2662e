"""SQLite: a window that cuts a day reads the raw rows of the buckets its edges cut, not the
rows between them (those are answered from the ten-minute rollups)."""

from __future__ import annotations

import json
from pathlib import Path

from store_support import unexpected_hash

from stella_bundle.store import ingest_ndjson, open_store
from stella_bundle.store.sqlite import SqliteStore

NODES = [unexpected_hash(i) for i in range(5)]
WINDOW = ("2026-01-23T00:05:00.000000Z", "2026-01-23T00:55:00.000000Z")


def _store(tmp_path: Path, middle: int) -> SqliteStore:
    """50 records in each edge bucket (00:00 and 00:50), `middle` in each of the four
    buckets between, over the same five nodes."""
    records = []
    for bucket in range(6):
        count = 50 if bucket in (0, 5) else middle
        for index in range(count):
            micros = bucket * 600_000_000 + index * 600_000_000 // count
            second, micro = divmod(micros, 1_000_000)
            records.append(
                {
                    "node_hash": NODES[index % len(NODES)],
                    "function_name": f"fn_{index % len(NODES)}",
                    "probe_type": "uprobe",
                    "observed_at": f"2026-01-23T00:{second // 60:02d}:{second % 60:02d}"
                    f".{micro:06d}Z",
                }
            )
    path = tmp_path / f"obs-{middle}.ndjson"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    store = open_store(f"sqlite:///{tmp_path / f'm{middle}.sqlite'}", initialise=True)
    assert isinstance(store, SqliteStore)
    ingest_ndjson(store, [path])
    return store


def _work(store: SqliteStore) -> tuple[int, int]:
    """(SQLite virtual machine steps / 100, records in the window) of the window's answer."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store.db.set_progress_handler(count, 100)
    try:
        answer = store.aggregate_nodes(*WINDOW)
    finally:
        store.db.set_progress_handler(None, 0)
    return steps[0], answer.records_in_window


def test_a_window_reads_the_raw_rows_of_its_edge_buckets_only(tmp_path: Path) -> None:
    """Twenty times the records between the edges: the same work (they are rolled up), the
    answer grown by them. A plan reading the index over the whole window (as one OR of the
    edge ranges plus a condition on the window's reach did) grows ~20x."""
    with _store(tmp_path, 200) as few, _store(tmp_path, 4000) as many:
        few_steps, few_records = _work(few)
        many_steps, many_records = _work(many)
    assert (few_records, many_records) == (4 * 200 + 51, 4 * 4000 + 51)
    assert many_steps < 1.5 * few_steps, (few_steps, many_steps)
