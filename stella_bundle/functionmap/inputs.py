"""Where observations come from: NDJSON files, or the sealed chunks of evidence chains.

`--evidence DIR` reads `DIR/<chain_id>/<seq:010d>.ndjson.zst` (or DIR itself as one chain, or a
bundle's `DIR/evidence/`), in sequence order. Seals are not checked here: chain verification
is the bundle verifier's job; open `.ndjson.partial` tails are not evidence until sealed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..evidence.layout import CHUNK_SUFFIX, find_chain_dirs, parse_name
from ..observations.ndjson import iter_json_lines
from ..observations.record import validate_record


def evidence_chunk_paths(directory: str | Path) -> list[Path]:
    """Sealed chunk files of every chain under `directory`, chain by chain, in sequence order."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError("expected an evidence directory", path=root, field="--evidence")
    chains = find_chain_dirs(root)
    if not chains and (root / "evidence").is_dir():
        chains = find_chain_dirs(root / "evidence")
    chunks: list[Path] = []
    for chain in chains:
        numbered = []
        for entry in chain.iterdir():
            parsed = parse_name(entry.name)
            if parsed is not None and parsed[1] == CHUNK_SUFFIX:
                numbered.append((parsed[0], entry))
        chunks += [path for _, path in sorted(numbered)]
    if not chunks:
        raise InputError(
            "no sealed chunks (<chain_id>/<seq>.ndjson.zst) found", path=root, field="--evidence"
        )
    return chunks


def observation_paths(
    observations: Sequence[str | Path] | None, evidence: str | Path | None
) -> list[Path]:
    """The files to read: exactly one of --observations FILE... or --evidence DIR."""
    if bool(observations) == (evidence is not None):
        raise InputError("give --observations FILE (repeatable) or --evidence DIR, not both")
    if evidence is not None:
        return evidence_chunk_paths(evidence)
    paths = [Path(p) for p in observations or []]
    for path in paths:
        if not path.is_file():
            raise InputError("observation file not found", path=path, field="--observations")
    return paths


def iter_records(paths: Iterable[str | Path]) -> Iterator[dict[str, Any]]:
    """Validated records of every file, in order; errors name file and line."""
    for path in paths:
        for number, value in iter_json_lines(path):
            yield validate_record(value, path, number)
