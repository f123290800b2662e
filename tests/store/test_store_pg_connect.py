"""PostgreSQL servers that will not let the store in: a wrong password, no password, a role that
does not exist, nothing listening, a host name that does not resolve, a database that does not
exist, a URL libpq cannot read. Each is one line naming the store and the server's reason with
what to do, never the password, exit 2, for every command; `stella serve` refuses to start with
the same line (before it announces itself) and a running API answers 503 until the cause goes."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stella_bundle.api import ApiSettings, create_app
from stella_bundle.formats.trust_root import TrustRoot

PASSWORD = "s3cret-Pa55word"
WRONG = "not-the-Pa55word"
ROLE = "stella_pw"


@pytest.fixture(scope="module")
def pw_role(pg_cluster: Any) -> str:
    """A role that must give its password (scram-sha-256 on the cluster's socket), owning a
    database of its own."""
    import psycopg

    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {ROLE}_db")
        db.execute(f"DROP ROLE IF EXISTS {ROLE}")
        db.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        db.execute(f"CREATE DATABASE {ROLE}_db OWNER {ROLE}")
    hba = pg_cluster.data / "pg_hba.conf"
    line = f"local all {ROLE} scram-sha-256\n"
    text = hba.read_text()
    if line not in text:
        hba.write_text(line + text)  # first: it wins over the cluster's `trust`
    pg_cluster.pg_ctl("reload")
    return f"{ROLE}_db"


def _url(pg_cluster: Any, database: str, userinfo: str, extra: str = "") -> str:
    return (
        f"postgresql://{userinfo}@/{database}?host={pg_cluster.socket_dir}"
        f"&port={pg_cluster.port}{extra}"
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _refusals(pg_cluster: Any, database: str, tmp_path: Path) -> list[tuple[str, str, str]]:
    """(URL, what the line must say, the hint's words)."""
    port = _closed_port()
    return [
        (
            _url(pg_cluster, database, f"{ROLE}:{WRONG}"),
            f'password authentication failed for user "{ROLE}"',
            "PGPASSWORD or ~/.pgpass",
        ),
        (
            _url(pg_cluster, database, ROLE),
            "no password supplied",
            "the server asks for a password",
        ),
        (
            _url(pg_cluster, database, f"nosuchrole:{WRONG}"),
            'role "nosuchrole" does not exist',
            "check the URL's user",
        ),
        (
            # `trust` for postgres: the database is what is missing.
            _url(pg_cluster, "nosuchdb", "postgres", f"&password={WRONG}"),
            'database "nosuchdb" does not exist',
            "createdb",
        ),
        (
            f"postgresql://{ROLE}:{WRONG}@127.0.0.1:{port}/{database}",
            f'at "127.0.0.1", port {port}: Connection refused',
            "is the server running",
        ),
        (
            f"postgresql:///{database}?host={tmp_path}&user={ROLE}&password={WRONG}",
            "No such file or directory",
            "is the server running",
        ),
        (
            f"postgresql://{ROLE}:{WRONG}@no-such-host.invalid:5432/{database}",
            "no-such-host.invalid",
            "unknown host name",
        ),
    ]


def _check_line(done: Any, url: str, *words: str) -> str:
    assert done.exit_code == 2, (url, done.exit_code, done.stdout, done.stderr)
    assert WRONG not in done.stderr + done.stdout and PASSWORD not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: store postgresql://"), lines[0]
    assert ": cannot connect to the server" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return str(lines[0])


def test_refused_logins_are_one_line_for_every_command(
    pg_cluster: Any, pw_role: str, run_cli: Any, tmp_path: Path
) -> None:
    source = tmp_path / "r.ndjson"
    source.write_text(
        json.dumps(
            {
                "node_hash": "sha256:" + "0" * 64,
                "function_name": "f",
                "probe_type": "uprobe",
                "observed_at": "2026-01-23T10:00:00.000000Z",
            }
        )
        + "\n"
    )
    for url, said, hint in _refusals(pg_cluster, pw_role, tmp_path):
        for args in (
            ("store", "status"),
            ("store", "init"),
            ("store", "migrate"),
            ("observations", "ingest", str(source)),
            ("observations", "query"),
        ):
            _check_line(run_cli(*args, "--store", url), url, said, hint)
    # The right password: the same commands work.
    good = _url(pg_cluster, pw_role, f"{ROLE}:{PASSWORD}")
    assert run_cli("store", "init", "--store", good).exit_code == 0
    ingested = run_cli("observations", "ingest", str(source), "--store", good)
    assert ingested.exit_code == 0, ingested.stderr


@pytest.mark.parametrize(
    "userinfo, extra",
    [
        (f"{ROLE}:{WRONG}%zz", ""),  # libpq quotes the token it cannot decode: the password
        (ROLE, f"&password={WRONG}%zz"),
        (ROLE, f"&sslpassword={WRONG}%zz"),
    ],
)
def test_a_password_libpq_cannot_read_is_not_echoed(
    pg_cluster: Any, pw_role: str, run_cli: Any, userinfo: str, extra: str
) -> None:
    url = _url(pg_cluster, pw_role, userinfo, extra)
    done = run_cli("store", "status", "--store", url)
    assert done.exit_code == 2, done.stderr
    assert WRONG not in done.stderr and "zz" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and "invalid percent-encoded token" in done.stderr


def test_serve_refuses_to_start_and_the_api_answers_503(
    pg_cluster: Any, pw_role: str, run_cli: Any, test_keys: Any, tmp_path: Path
) -> None:
    for url, said, hint in _refusals(pg_cluster, pw_role, tmp_path)[:4]:
        done = run_cli("serve", "--store", url, "--trust-root", test_keys.trust_root)
        line = _check_line(done, url, said, hint)
        assert "stella serve:" not in done.stderr, line  # not announced
    # A running server whose role's password changes under it: 503 naming the store, then
    # served again once the password is the URL's.
    url = _url(pg_cluster, pw_role, f"{ROLE}:{WRONG}")
    import psycopg

    def set_password(password: str) -> None:
        with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as db:
            db.execute(f"ALTER ROLE {ROLE} PASSWORD '{password}'")

    settings = ApiSettings(url, TrustRoot.load(test_keys.trust_root), work_dir=tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for path in ("/api/v1/function-maps", "/api/v1/observations", "/readyz"):
            answer = client.get(path)
            assert answer.status_code == 503, answer.text
            detail = answer.json()["detail"]
            assert WRONG not in detail and "password authentication failed" in detail, detail
            assert detail.startswith("store unavailable: store postgresql://"), detail
        set_password(WRONG)
        try:
            assert run_cli("store", "init", "--store", url).exit_code == 0
            assert client.get("/readyz").status_code == 200
            assert client.get("/api/v1/function-maps").status_code == 200
        finally:
            set_password(PASSWORD)


@pytest.mark.parametrize(
    "extra, words",
    [
        ("&sslmode=bogus", 'invalid sslmode value: "bogus"'),
        ("&foo=bar", 'invalid URI query parameter: "foo"'),
        ("&options=-c%20bogus", "-c bogus requires a value"),
        ("&options=-c%20no_such_setting%3D1", 'unrecognized configuration parameter "no_such'),
        ("&target_session_attrs=nonsense", "target_session_attrs"),
    ],
)
def test_odd_url_parameters_are_one_line(
    pg_cluster: Any, pw_role: str, run_cli: Any, extra: str, words: str
) -> None:
    url = _url(pg_cluster, pw_role, f"{ROLE}:{PASSWORD}", extra)
    for args in (("store", "status"), ("store", "init"), ("observations", "query")):
        done = run_cli(*args, "--store", url)
        assert done.exit_code == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert PASSWORD not in done.stderr and "postgresql://stella_pw:***@" in done.stderr
        assert words in lines[0], lines[0]


@pytest.mark.parametrize("extra", ["&port=1", "&host=/nonexistent", "&password=x&password=y"])
def test_a_parameter_given_twice_is_refused(
    pg_cluster: Any, pw_role: str, run_cli: Any, extra: str
) -> None:
    """libpq keeps the last of a repeated parameter: which server or password would count
    is a guess."""
    url = _url(pg_cluster, pw_role, f"{ROLE}:{PASSWORD}", extra)
    name = extra[1:].partition("=")[0]
    done = run_cli("store", "status", "--store", url)
    assert done.exit_code == 2
    assert f"parameter {name!r} given more than once" in done.stderr, done.stderr
    assert PASSWORD not in done.stderr and "password=x" not in done.stderr
