"""Sealing external observations (replays, other agents) into a chain of their own."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from .. import __version__
from ..digests import file_sha256
from ..errors import InputError
from ..formats.flat import read_flat
from ..formats.record import ObservationError
from ..formats.seal import CollectorInfo
from ..observations.ndjson import iter_json_lines
from .config import WriterConfig
from .encoding import encode_record
from .layout import SEAL_SUFFIX, parse_name, validate_chain_id
from .timecheck import RECORD_AFTER_SEAL, ChunkTimes, latest_sealable
from .writer import ChunkWriter

IMPORT_COLLECTOR_ID = "stella-import"


@dataclass(frozen=True)
class ImportResult:
    """What `observations import` prints: the chain written and what went into it."""

    chain_id: str
    chain_dir: Path
    records: int
    chunks: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "chain_dir": str(self.chain_dir),
            "records": self.records,
            "chunks": self.chunks,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> ImportResult:
        values = read_flat(_ImportFields, data, source, "import")
        return cls(
            values["chain_id"], Path(values["chain_dir"]), values["records"], values["chunks"]
        )


@dataclass(frozen=True)
class _ImportFields:
    chain_id: str
    chain_dir: str
    records: int
    chunks: int


def default_chain_id(path: Path) -> str:
    return f"import-{file_sha256(path)[:16]}"


def _refuse_inverted_window(record: dict[str, Any], path: Path, number: int, latest: str) -> None:
    """A record whose own window misses its `observed_at`, or dated after this clock (+ skew:
    `latest`), would seal into a chain the verifier refuses (`timecheck`, the same rules):
    refused here, before anything is written."""
    times = ChunkTimes()
    times.add(
        record["observed_at"], record.get("first_observed_at"), record.get("last_observed_at")
    )
    if times.bad_record is not None:
        code, message = times.bad_record
        raise ObservationError(
            f"{message} ({code})", path=path, line=number, field="first_observed_at"
        )
    if times.end > latest:
        field = "last_observed_at" if times.end != times.latest_observed else "observed_at"
        raise ObservationError(
            f"observed at {times.end}, after this clock ({latest} with the allowed skew): "
            f"sealed, it would fail its chunk ({RECORD_AFTER_SEAL})",
            path=path,
            line=number,
            field=field,
        )


def import_observations(
    source: str | Path,
    evidence_dir: str | Path,
    signer: Signer,
    *,
    chain_id: str | None = None,
    config: WriterConfig | None = None,
    collector: CollectorInfo | None = None,
) -> ImportResult:
    """Validate every record first (nothing is written for a bad file), then seal them all.

    The chain id defaults to `import-<sha256 prefix of the file>`; importing into a chain
    that already has seals is refused, so the same file is not sealed twice by accident.
    """
    path = Path(source)
    count = 0
    latest = latest_sealable()
    for number, value in iter_json_lines(path):
        encode_record(value, path, number)
        _refuse_inverted_window(value, path, number, latest)
        count += 1
    chain = validate_chain_id(chain_id or default_chain_id(path))
    chain_dir = Path(evidence_dir) / chain
    if chain_dir.is_dir() and any(
        (parse_name(p.name) or (0, ""))[1] == SEAL_SUFFIX for p in chain_dir.iterdir()
    ):
        raise InputError(
            f"chain {chain!r} already holds sealed chunks (already imported?); pass another "
            "--chain-id to import again",
            path=chain_dir,
        )
    collector = collector or CollectorInfo(
        id=IMPORT_COLLECTOR_ID,
        host=socket.gethostname(),
        boot_id=None,
        version=__version__,
        probe_set_sha256=None,
    )
    writer = ChunkWriter.open(evidence_dir, chain, signer, config, collector)
    with writer:
        for _, value in iter_json_lines(path):
            writer.append(value)
    return ImportResult(chain, chain_dir, count, writer.sealed_chunks)
