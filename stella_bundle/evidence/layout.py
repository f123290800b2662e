"""File names inside an evidence chain directory: `evidence/<chain_id>/<seq:010d>.*`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from ..errors import InputError
from ..formats.seal import CHAIN_ID_RE

CHUNK_SUFFIX: Final = ".ndjson.zst"
SEAL_SUFFIX: Final = ".seal.dsse.json"
PARTIAL_SUFFIX: Final = ".ndjson.partial"
# Beside the open chunk: collector identity and loss counters, so a crash loses neither.
PARTIAL_STATE_SUFFIX: Final = ".partial.json"
PRUNE_RECORD_NAME: Final = "prune.dsse.json"
LOCK_NAME: Final = ".writer.lock"

_NAME_RE: Final = re.compile(
    r"^(?P<seq>[0-9]{10})(?P<suffix>\.ndjson\.zst|\.seal\.dsse\.json|\.ndjson\.partial|\.partial\.json)\Z"
)


def validate_chain_id(chain_id: str) -> str:
    if not isinstance(chain_id, str) or not CHAIN_ID_RE.match(chain_id):
        raise InputError(
            f"invalid chain id {chain_id!r}: expected 1-128 characters of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit",
            field="chain_id",
        )
    return chain_id


def chunk_name(sequence: int) -> str:
    return f"{sequence:010d}{CHUNK_SUFFIX}"


def seal_name(sequence: int) -> str:
    return f"{sequence:010d}{SEAL_SUFFIX}"


def partial_name(sequence: int) -> str:
    return f"{sequence:010d}{PARTIAL_SUFFIX}"


def partial_state_name(sequence: int) -> str:
    return f"{sequence:010d}{PARTIAL_STATE_SUFFIX}"


def parse_name(name: str) -> tuple[int, str] | None:
    """(sequence, suffix) of a chain file name, or None for anything else."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    return int(match.group("seq")), match.group("suffix")


def is_temporary(name: str) -> bool:
    """Temp files of atomic writes (`.<name>.<random>.tmp`): never evidence."""
    return name.startswith(".") and name.endswith(".tmp")


def looks_like_chain(directory: Path) -> bool:
    """A directory holding chain files (seals, chunks, an open chunk or a prune record)."""
    try:
        return any(
            parse_name(entry.name) is not None or entry.name == PRUNE_RECORD_NAME
            for entry in directory.iterdir()
        )
    except OSError:
        return False


def find_chain_dirs(path: Path) -> list[Path]:
    """`path` itself when it is a chain directory, else its chain subdirectories, sorted."""
    if not path.is_dir():
        raise InputError("expected an evidence directory or a chain directory", path=path)
    if looks_like_chain(path):
        return [path]
    return sorted(child for child in path.iterdir() if child.is_dir() and looks_like_chain(child))
