"""The agent's directory of signed function maps, looked at by polling.

A map is a `*.json` file directly in the directory (symbolic links followed: a Kubernetes
ConfigMap volume is links into a `..data` directory swapped atomically on update). Not maps:
hidden names (the ConfigMap's own `..data`), the trust root when it lives there too, and
`NAME.json` beside `NAME.dsse.json` (the envelope's payload, as bundles ship it: the envelope
is the map). Every other JSON file is a map and must verify, or it is refused.

Polling (every `poll_seconds`, default 2 s) rather than inotify: it works on every file system
and volume type (ConfigMaps, NFS, overlay), costs one directory listing and a stat per file per
poll, and a file is read and hashed only when its inode, size or mtime changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..canonical import sha256_hex
from ..errors import InputError, StellaError
from ..fsutil import read_regular_file

ENVELOPE_SUFFIX = ".dsse.json"


@dataclass(frozen=True)
class MapFile:
    """One map file as read: its bytes are the ones verified and hashed."""

    name: str
    path: Path
    raw: bytes
    sha256: str


@dataclass(frozen=True)
class Unreadable:
    """A map file that could not be read (gone between listing and reading, not a file...)."""

    name: str
    path: Path
    error: StellaError


class MapDirectory:
    """Lists the maps of `directory`; `scan` re-reads only files whose stat changed."""

    def __init__(self, directory: Path, skip: tuple[Path, ...] = ()) -> None:
        self.directory = directory
        self._skip = {_identity(path) for path in skip} - {None}
        self._known: dict[str, tuple[tuple[int, int, int, int], MapFile | Unreadable]] = {}

    def check(self) -> None:
        """Refuse a directory that is not there at start (a typo must not run an empty agent)."""
        if not self.directory.is_dir():
            raise InputError("expected a directory of signed function maps", path=self.directory)

    def scan(self) -> dict[str, MapFile | Unreadable]:
        """Every map file by name. Raises InputError when the directory cannot be listed (the
        caller keeps what runs: an unmounted volume is no reason to end every chain)."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            raise InputError(
                f"cannot list the function map directory: {exc.strerror}", path=self.directory
            ) from exc
        present = set(names)
        found: dict[str, MapFile | Unreadable] = {}
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            payload_of = name.removesuffix(".json") + ENVELOPE_SUFFIX
            if not name.endswith(ENVELOPE_SUFFIX) and payload_of in present:
                continue  # the envelope's payload copy
            path = self.directory / name
            try:
                stat = path.stat()
            except OSError:
                continue  # gone since the listing
            if (stat.st_ino, stat.st_dev) in self._skip:
                continue
            key = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
            known = self._known.get(name)
            if known is not None and known[0] == key:
                found[name] = known[1]
                continue
            found[name] = _read(name, path)
            self._known[name] = (key, found[name])
        self._known = {name: self._known[name] for name in found}
        return found


def _read(name: str, path: Path) -> MapFile | Unreadable:
    try:
        raw = read_regular_file(path)
    except StellaError as exc:
        return Unreadable(name, path, exc)
    return MapFile(name, path, raw, sha256_hex(raw))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_dev)
