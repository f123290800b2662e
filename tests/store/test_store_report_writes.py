"""Reports stored from several threads of one process (the API's verification threads)."""

from __future__ import annotations

import threading
from pathlib import Path

from stella_bundle.store import open_store
from stella_bundle.store.base import encode_report
from stella_bundle.store.sqlite import SqliteStore, unpack_report

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


def test_reports_are_stored_compressed_and_older_text_rows_still_read(tmp_path: Path) -> None:
    """Schema version 6 stores a report as a zstd BLOB of its JSON (a tenth of the pages in the
    WAL and in each checkpoint); a row of version 5 (JSON text) reads as before."""
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    digest = "sha256:" + "ab" * 32
    with open_store(url, initialise=True) as store:
        assert isinstance(store, SqliteStore)
        new = store.put_report(digest, None, None, True, REPORT)
        store.db.execute(
            "INSERT INTO verification_reports (function_map_digest, created_at, window_from, "
            "window_to, verified, report) VALUES (?, ?, NULL, NULL, 0, ?)",
            (digest, new.created_at, encode_report({"verified": False}).decode()),
        )
        (stored,) = store.db.execute(
            "SELECT report FROM verification_reports WHERE id = ?", (new.id,)
        ).fetchone()
        assert isinstance(stored, bytes) and len(stored) * 5 < len(encode_report(REPORT))
        assert unpack_report(stored) == encode_report(REPORT)
        assert [(r.verified, r.report) for r in store.list_reports(digest)] == [
            (True, REPORT),
            (False, {"verified": False}),
        ]
        old = store.get_report(new.id + 1)
        assert old is not None and old.report == {"verified": False}
