"""Where observations come from: NDJSON files, or the sealed chunks of evidence chains.

`--evidence DIR` reads every chain under DIR (or DIR itself as one chain, or a bundle's
`DIR/evidence/`) with the evidence reader: sealed chunks only, in sequence order, each chunk's
digests checked against its seal (signatures are `stella signals verify-chain`'s and the
bundle verifier's job); open `.ndjson.partial` tails are not evidence until sealed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..evidence.layout import CHUNK_SUFFIX, find_chain_dirs, parse_name
from ..formats.record import validate_record
from ..observations.ndjson import iter_json_lines


def evidence_chain_dirs(directory: str | Path) -> list[Path]:
    """The chain directories under `directory` (or a bundle's `directory/evidence`)."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError("expected an evidence directory", path=root, field="--evidence")
    chains = find_chain_dirs(root)
    if not chains and (root / "evidence").is_dir():
        chains = find_chain_dirs(root / "evidence")
    if not chains:
        raise InputError(
            "no evidence chain (<chain_id>/<seq>.ndjson.zst + seals) found",
            path=root,
            field="--evidence",
        )
    return chains


def iter_evidence_records(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Validated records of every sealed chunk of every chain under `directory`."""
    # Imported here: the chain reader pulls in the trust root and securesystemslib (≈0.15 s)
    # that reading plain observation files does not need.
    from ..evidence.reader import iter_chain_records

    for chain in evidence_chain_dirs(directory):
        yield from iter_chain_records(chain)


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


def check_one_source(
    observations: Sequence[str | Path] | None, evidence: str | Path | None
) -> None:
    if bool(observations) == (evidence is not None):
        raise InputError("give exactly one of --observations FILE (repeatable) or --evidence DIR")


def observation_paths(observations: Sequence[str | Path]) -> list[Path]:
    """The --observations files, each checked to exist."""
    paths = [Path(p) for p in observations or []]
    for path in paths:
        if not path.is_file():
            raise InputError("observation file not found", path=path, field="--observations")
    return paths


def iter_input_records(
    observations: Sequence[str | Path] | None, evidence: str | Path | None
) -> Iterator[dict[str, Any]]:
    """Validated records from exactly one of --observations FILE... or --evidence DIR."""
    check_one_source(observations, evidence)
    if evidence is not None:
        return iter_evidence_records(evidence)
    return iter_records(observation_paths(observations or []))


def iter_records(paths: Iterable[str | Path]) -> Iterator[dict[str, Any]]:
    """Validated records of every file, in order; errors name file and line."""
    for path in paths:
        for number, value in iter_json_lines(path):
            yield validate_record(value, path, number)
