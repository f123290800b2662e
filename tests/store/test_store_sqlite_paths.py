"""SQLite store URLs whose path is not a file to open: a directory (or a link to one), a device,
a link to nothing, `?parameters` (SQLite would have made them part of the file's name). Each is
one line naming the store and what the path is, exit 2, for every command; nothing created."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    "name, words",
    [
        ("dir", "is a directory, not a SQLite file"),
        ("link-to-dir", "is a directory, not a SQLite file"),
        ("/dev/null", "is a device, FIFO or socket, not a SQLite file"),
        ("fifo", "is a device, FIFO or socket, not a SQLite file"),
    ],
)
def test_a_path_that_is_not_a_file_is_named(
    tmp_path: Path, run_cli: Any, name: str, words: str
) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "link-to-dir").symlink_to(tmp_path / "dir")
    os.mkfifo(tmp_path / "fifo")
    path = name if name.startswith("/") else str(tmp_path / name)
    url = f"sqlite:///{path}"
    for args in (
        ("store", "init"),
        ("store", "status"),
        ("store", "migrate"),
        ("observations", "query"),
    ):
        done = run_cli(*args, "--store", url)
        assert done.exit_code == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"store {url}: {path} {words}" in lines[0], (args, lines)
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == []


def test_a_link_to_nothing_is_named(tmp_path: Path, run_cli: Any) -> None:
    link = tmp_path / "store.sqlite"
    link.symlink_to(tmp_path / "gone" / "x.sqlite")
    done = run_cli("store", "init", "--store", f"sqlite:///{link}")
    assert done.exit_code == 2
    assert f"{link} is a symbolic link to {tmp_path / 'gone' / 'x.sqlite'}, which does not" in (
        done.stderr
    )


@pytest.mark.parametrize("suffix", ["?mode=ro", "?cache=shared&mode=rwc", "#main"])
def test_parameters_are_refused_not_made_part_of_the_file_name(
    tmp_path: Path, run_cli: Any, suffix: str
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}{suffix}"
    for args in (("store", "init"), ("observations", "query")):
        done = run_cli(*args, "--store", url)
        assert done.exit_code == 2
        assert "a SQLite store URL takes no ?parameters or #fragment" in done.stderr
    assert list(tmp_path.iterdir()) == []  # was: a file named store.sqlite?mode=ro, writable
