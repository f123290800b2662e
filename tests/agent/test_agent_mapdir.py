"""The agent's map directory: which files are maps, a change seen as a new sha256, files that
cannot be read reported (not hung on), a missing directory refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from stella_bundle.agent.mapdir import MapDirectory, MapFile, Unreadable
from stella_bundle.errors import InputError


def test_which_files_are_maps(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "a.dsse.json").write_text("{}")
    (maps / "a.json").write_text("{}")  # the envelope's payload, shipped beside it
    (maps / "b.json").write_text("{}")  # a map of its own (it must verify, or be refused)
    (maps / "trust-root.json").write_text("{}")
    (maps / ".c.dsse.json.tmp").write_text("{}")
    (maps / "..data").mkdir()
    (maps / "notes.txt").write_text("")
    found = MapDirectory(maps, skip=(maps / "trust-root.json",)).scan()
    assert sorted(found) == ["a.dsse.json", "b.json"]


def test_a_change_is_a_new_sha256_and_a_removal_is_gone(tmp_path: Path) -> None:
    directory = MapDirectory(tmp_path)
    (tmp_path / "a.dsse.json").write_bytes(b'{"v": 1}')
    first = directory.scan()["a.dsse.json"]
    assert isinstance(first, MapFile)
    assert first.sha256 == hashlib.sha256(b'{"v": 1}').hexdigest()
    assert directory.scan()["a.dsse.json"] == first
    (tmp_path / "a.dsse.json").write_bytes(b'{"v": 22}')
    second = directory.scan()["a.dsse.json"]
    assert isinstance(second, MapFile) and second.sha256 != first.sha256
    (tmp_path / "a.dsse.json").unlink()
    assert directory.scan() == {}


def test_symbolic_links_are_followed_as_a_configmap_volume_needs(tmp_path: Path) -> None:
    data = tmp_path / "..2026_12_02"
    data.mkdir()
    (data / "a.dsse.json").write_bytes(b"{}")
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "a.dsse.json").symlink_to("..data/a.dsse.json")
    (entry,) = MapDirectory(tmp_path).scan().values()
    assert isinstance(entry, MapFile) and entry.raw == b"{}"


def test_a_fifo_is_reported_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f.dsse.json")
    (entry,) = MapDirectory(tmp_path).scan().values()
    assert isinstance(entry, Unreadable)
    assert "expected a regular file" in entry.error.describe()
    assert str(tmp_path / "f.dsse.json") in entry.error.describe()


def test_a_missing_directory_is_refused_naming_it(tmp_path: Path) -> None:
    directory = MapDirectory(tmp_path / "nowhere")
    with pytest.raises(InputError, match="directory of signed function maps"):
        directory.check()
    with pytest.raises(InputError, match="cannot list"):
        directory.scan()
