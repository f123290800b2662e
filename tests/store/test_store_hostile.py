"""Stores that are not what the command expects: another program's database, a schema newer
than this stella, a read-only or full file system, a URL that does not parse or that carries
a password. Each: one line naming the store (never its password), exit 2, nothing written,
and where the cause goes away a retry completes."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.store import open_store

RECORD = {
    "function_name": "f",
    "probe_type": "uprobe",
}


def _ndjson(path: Path, count: int) -> Path:
    lines = []
    for index in range(count):
        record = {
            **RECORD,
            "node_hash": f"sha256:{index:064d}",
            "function_name": f"f{index}",
            "observed_at": f"2026-01-23T10:{index // 60 % 60:02d}:{index % 60:02d}.000000Z",
        }
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")
    return path


def _one_line(done: Any, *words: str) -> str:
    assert done.exit_code == 2, (done.exit_code, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: store "), done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return str(lines[0])


def _sqlite_tables(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT name FROM sqlite_master ORDER BY name")]


def _pg_tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


def _pg_execute(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        for statement in statements:
            db.execute(statement.encode())


@pytest.fixture(params=["sqlite", "postgres"])
def foreign(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[], list[str]]]:
    """An SQL database holding another program's table: its URL and how to list its tables."""
    if request.param == "sqlite":
        path = tmp_path / "theirs.sqlite"
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE accounts (id INTEGER, name TEXT)")
            db.commit()
        return f"sqlite:///{path}", lambda: _sqlite_tables(path)
    url: str = request.getfixturevalue("pg_url")
    _pg_execute(url, "CREATE TABLE accounts (id integer, name text)")
    return url, lambda: _pg_tables(url)


def test_another_programs_database_is_not_adopted(
    foreign: tuple[str, Callable[[], list[str]]], tmp_path: Path, run_cli: Any
) -> None:
    url, tables = foreign
    before = tables()
    source = _ndjson(tmp_path / "r.ndjson", 3)
    for args in (
        ("store", "init", "--store", url),
        ("store", "migrate", "--store", url),
        ("observations", "ingest", str(source), "--store", url),
    ):
        _one_line(run_cli(*args), "is not a stella store", "accounts")
        assert tables() == before, args
    # A new store beside it is made as before.
    fresh = f"sqlite:///{tmp_path / 'ours.sqlite'}"
    assert run_cli("observations", "ingest", str(source), "--store", fresh).exit_code == 0


@pytest.fixture(params=["sqlite", "postgres"])
def newer(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store at schema version latest + 1 (a later stella migrated it)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'newer.sqlite'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    with open_store(url, initialise=True) as store:
        latest = store.latest_version()
    if request.param == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            db.execute(
                "INSERT INTO schema_migrations VALUES (?, 'from the future', 'x')", (latest + 1,)
            )
            db.commit()
    else:
        _pg_execute(
            url, f"INSERT INTO schema_migrations VALUES ({latest + 1}, 'from the future', now())"
        )
    return url


def test_a_newer_schema_is_refused_by_every_command(
    newer: str, tmp_path: Path, run_cli: Any
) -> None:
    source = _ndjson(tmp_path / "r.ndjson", 3)
    for args in (
        ("store", "init", "--store", newer),
        ("store", "migrate", "--store", newer),
        ("observations", "ingest", str(source), "--store", newer),
        ("observations", "query", "--store", newer),
    ):
        _one_line(run_cli(*args), "newer than this stella knows", "upgrade stella")
    status = run_cli("store", "status", "--store", newer, "--format", "json")
    assert json.loads(status.stdout)["records"] == 0


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def test_a_full_disk_stores_nothing_and_a_retry_completes(tmp_path: Path, run_cli: Any) -> None:
    source = _ndjson(tmp_path / "big.ndjson", 20_000)
    with _tmpfs(tmp_path / "small", "600k") as small:
        url = f"sqlite:///{small / 'obs.sqlite'}"
        assert run_cli("store", "init", "--store", url).exit_code == 0
        _one_line(run_cli("observations", "ingest", str(source), "--store", url), url, "full")
        with open_store(url) as store:
            status = store.status()
            assert (status.records, status.chunks) == (0, 0)
        _remount(small, "size=64m")
        done = run_cli("observations", "ingest", str(source), "--store", url)
        assert done.exit_code == 0, done.stderr
        with open_store(url) as store:
            assert store.status().records == 20_000


def test_a_read_only_store_says_why(tmp_path: Path, run_cli: Any) -> None:
    source = _ndjson(tmp_path / "r.ndjson", 3)
    with _tmpfs(tmp_path / "ro", "4m") as where:
        url = f"sqlite:///{where / 'obs.sqlite'}"
        assert run_cli("observations", "ingest", str(source), "--store", url).exit_code == 0
        _remount(where, "ro")
        for args in (
            ("observations", "query", "--store", url),
            ("observations", "ingest", str(source), "--store", url),
        ):
            _one_line(run_cli(*args), url, "read-only", "obs.sqlite-wal")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://stella:s3cret@[::1/db", ("malformed store URL", "Invalid IPv6")),
        ("postgresql://stella:s3cret@host:99999/db", ("malformed store URL", "Port")),
        ("postgresql://stella:s3cret@127.0.0.1:1/db", ("cannot connect", "stella:***@")),
        ("postgresql://stella@127.0.0.1:1/db?password=s3cret", ("cannot connect", "password=***")),
        ("postgres://stella@127.0.0.1:1/db?sslpassword=s3cret", ("cannot connect",)),
    ],
)
def test_store_urls_are_named_without_their_password(
    url: str, words: tuple[str, ...], run_cli: Any
) -> None:
    for args in (("store", "status", "--store", url), ("observations", "query", "--store", url)):
        done = run_cli(*args)
        assert done.exit_code == 2, done.stderr
        line = done.stderr.strip()
        assert "\n" not in line and "s3cret" not in line, line
        for word in words:
            assert word in line, (word, line)


@pytest.mark.parametrize("given", ["directory", "device", "missing"])
def test_an_ndjson_path_that_is_no_file_is_named_for_what_it_is(
    given: str, tmp_path: Path, run_cli: Any
) -> None:
    path = {"directory": tmp_path, "device": Path("/dev/null"), "missing": tmp_path / "no"}[given]
    url = f"sqlite:///{tmp_path / 'obs.sqlite'}"
    done = run_cli("observations", "ingest", str(path), "--store", url)
    assert done.exit_code == 2
    expected = {
        "directory": "found a directory (give --evidence DIR",
        "device": "found no regular file",
        "missing": "not found",
    }[given]
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {path}: ") and expected in line, line


def test_a_postgresql_server_refusing_writes_is_one_line_and_a_retry_completes(
    pg_url: str, tmp_path: Path, run_cli: Any
) -> None:
    """A database set read-only (a standby behaves so) and a role without write rights: the
    server refuses, one line naming the store, exit 2, nothing kept (were internal errors)."""
    import os

    source = _ndjson(tmp_path / "r.ndjson", 50)
    assert run_cli("store", "init", "--store", pg_url).exit_code == 0
    database = pg_url.split("///")[1].split("?")[0]
    role = f"reader_{os.getpid()}_{database}"
    _pg_execute(pg_url, f"CREATE ROLE {role} LOGIN")
    _pg_execute(pg_url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader = pg_url.replace("user=postgres", f"user={role}")
    for args in (
        ("observations", "ingest", str(source), "--store", reader),
        ("observations", "prune", "--older-than", "1h", "--store", reader),
    ):
        _one_line(run_cli(*args), "refused by the server, nothing written", "permission denied")
    _pg_execute(pg_url, f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    done = run_cli("observations", "ingest", str(source), "--store", pg_url)
    _one_line(done, "refused by the server", "read-only transaction")
    assert run_cli("observations", "query", "--store", pg_url).exit_code == 0  # reads still work
    _pg_execute(
        pg_url,
        "SET default_transaction_read_only = off",
        f"ALTER DATABASE {database} SET default_transaction_read_only = off",
    )
    with open_store(pg_url) as store:
        assert store.status().records == 0
    again = run_cli("observations", "ingest", str(source), "--store", pg_url)
    assert again.exit_code == 0, again.stderr
    with open_store(pg_url) as store:
        assert store.status().records == 50
