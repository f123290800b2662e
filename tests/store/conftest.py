"""Store fixtures: a private PostgreSQL cluster per session, and one store per backend.

PostgreSQL runs from Debian's binaries in a temporary directory (initdb, pg_ctl, a unix
socket, no TCP), as the `postgres` user when the tests run as root (initdb refuses root).
In CI (CI=true) a cluster that cannot start fails the PostgreSQL tests instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PgCluster:
    data: Path
    socket_dir: Path
    user: str | None  # run server commands as this user (root cannot)
    port: int = 5432

    def command(self, *args: str) -> list[str]:
        if self.user is None:
            return list(args)
        return ["runuser", "-u", self.user, "--", *args]

    def pg_ctl(self, action: str, *extra: str) -> None:
        subprocess.run(
            self.command(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.data.parent / "server.log"),
                "-w",
                "-t",
                "60",
                *extra,
                action,
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self.pg_ctl(
            "start",
            "-o",
            f"-k {self.socket_dir} -c listen_addresses='' -p {self.port} -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off",
        )

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-m", mode)

    def url(self, database: str) -> str:
        return f"postgresql:///{database}?host={self.socket_dir}&port={self.port}&user=postgres"

    def create_database(self, name: str) -> str:
        subprocess.run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                name,
            ],
            check=True,
            capture_output=True,
        )
        return self.url(name)


def _pg_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL could not start and CI=true requires it: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def _memory_dir() -> str | None:
    """/dev/shm when it has room: the cluster holds a database per test (about 8 MB each), and
    deleting those thousands of files from a disk mounted with `discard` took 16-60 s at the end
    of the session; in memory it takes well under a second. Otherwise the default temp dir."""
    shm = Path("/dev/shm")
    try:
        usage = shutil.disk_usage(shm)
    except OSError:
        return None
    if os.access(shm, os.W_OK) and usage.free > 2 << 30:
        return str(shm)
    return None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    if not (PG_BIN / "initdb").exists():
        _pg_unavailable(f"{PG_BIN}/initdb not found (scripts/setup.sh installs postgresql)")
    # Not under pytest's temporary root: pytest keeps /tmp/pytest-of-<user> at mode 0700
    # (and resets it when any session starts), which the server user cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="stella-pg-", dir=_memory_dir()))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        if shutil.which("runuser") is None:
            _pg_unavailable("running as root and runuser is missing")
        try:
            import pwd

            entry = pwd.getpwnam(user)
        except KeyError:
            _pg_unavailable("running as root and there is no 'postgres' user")
        shutil.chown(base, entry.pw_uid, entry.pw_gid)
    cluster = PgCluster(base / "data", base, user, 5432 + os.getpid() % 1000)
    try:
        subprocess.run(
            cluster.command(
                str(PG_BIN / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ),
            check=True,
            capture_output=True,
        )
        cluster.start()
    except (subprocess.CalledProcessError, OSError) as exc:
        log = base / "server.log"
        detail = getattr(exc, "stderr", b"") or b""
        if log.exists():
            detail += log.read_bytes()[-2000:]
        _pg_unavailable(f"{exc}: {detail.decode(errors='replace')}")
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


_COUNTER = iter(range(1_000_000))


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh database in the session's cluster."""
    return pg_cluster.create_database(f"store_{os.getpid()}_{next(_COUNTER)}")


BACKENDS = ("memory", "sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store of each backend."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    return url
