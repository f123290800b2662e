"""Reports stored from several threads of one process (the API's verification threads)."""

from __future__ import annotations

import threading
from pathlib import Path

from stella_bundle.store import open_store
from stella_bundle.store.sqlite import SqliteStore

REPORT = {"service": "svc", "verified": True, "paths": [{"id": f"p{i:05d}"} for i in range(3000)]}


def test_report_writes_of_one_process_wait_on_each_other_not_in_sqlite(tmp_path: Path) -> None:
    """Two stores on one file write reports from two threads at once. SQLite's busy handler is
    off (busy_timeout=0: a write meeting the other's lock fails at once), so every report
    stored shows the writes of one process took turns before reaching SQLite's lock."""
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with open_store(url, initialise=True):
        pass
    stores = [open_store(url) for _ in range(2)]
    assert all(isinstance(store, SqliteStore) for store in stores)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write(store: SqliteStore) -> None:
        store.db.execute("PRAGMA busy_timeout=0")
        start.wait(timeout=60)
        try:
            for _ in range(60):
                store.put_report("sha256:" + "ab" * 32, None, None, True, REPORT)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for store in stores:
        store.close()
    assert errors == []
    with open_store(url) as store:
        assert len(store.list_reports()) == 120
