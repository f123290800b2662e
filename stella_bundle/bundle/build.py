"""`bundle build`: function maps, evidence chains, probes and schemas into one reproducible,
signed `.stella.bundle.tgz`, streamed from disk so memory stays flat."""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from .. import __version__
from ..attest.dsse import IN_TOTO_PAYLOAD_TYPE, parse_envelope, sign_payload
from ..attest.statement import FUNCTION_MAP_PREDICATE, validate_statement
from ..canonical import canonical_bytes
from ..digests import HashingWriter, file_sha256_size
from ..errors import InputError, MalformedDocumentError, StatementError, StellaError
from ..evidence.layout import (
    CHUNK_SUFFIX,
    LOCK_NAME,
    PRUNE_RECORD_NAME,
    SEAL_SUFFIX,
    find_chain_dirs,
    is_temporary,
    parse_name,
    validate_chain_id,
)
from ..evidence.seal import parse_seal
from ..formats.manifest import MANIFEST, MANIFEST_ENVELOPE, ManifestFile
from ..fsutil import atomic_writer
from ..jsonio import load_json, parse_json, read_bytes
from ..timeutil import build_time, format_timestamp
from .layout import (
    BUNDLE_SUFFIX,
    PROBES,
    PROBES_LOCK,
    SCHEMAS,
    SERVICE_RE,
    chunk_path,
    entry_order,
    function_map_paths,
    observations_path,
    prune_path,
    seal_path,
)
from .manifest import Manifest
from .observations_view import TimeSpan, ViewStats, view_blocks, write_merged_view
from .tarwriter import ReproducibleTarWriter

BUILDER_ID = "https://stella.ops/builder/stella-bundle"
PACKAGE_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Source:
    """One archive entry: its bytes in memory, or a file on disk of known size."""

    name: str
    data: bytes | None = None
    path: Path | None = None
    size: int = 0
    sha256: str | None = None  # already known (the view, hashed while it was written)
    blocks: Callable[[], Iterator[bytes]] | None = None  # the bytes, when not data or path
    # The bytes deflated beforehand (a streamed view: `observations_view.ViewStats`), with
    # their CRC-32: spliced into the archive as they are, `sha256` being theirs.
    deflated: Path | None = None
    crc: int = 0

    @classmethod
    def of_bytes(cls, name: str, data: bytes) -> Source:
        return cls(name, data=data, size=len(data))

    @classmethod
    def of_file(cls, name: str, path: Path) -> Source:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", path=path) from exc
        return cls(name, path=path, size=size)


@dataclass
class Chain:
    chain_id: str
    directory: Path
    sequences: list[int] = field(default_factory=list)
    has_prune_record: bool = False

    def chunk(self, sequence: int) -> Path:
        return self.directory / f"{sequence:010d}.ndjson.zst"

    def seal(self, sequence: int) -> Path:
        return self.directory / f"{sequence:010d}.seal.dsse.json"


@dataclass(frozen=True)
class BuildResult:
    output: Path
    sha256: str
    size: int
    files: int
    services: tuple[str, ...]
    chains: tuple[str, ...]
    records: int


# --- inputs -----------------------------------------------------------------------------------


def function_map_sources(paths: Sequence[Path]) -> tuple[list[Source], list[str]]:
    """FM.json and/or FM.dsse.json → the two bundle entries per service.

    The Statement stored is the envelope's payload, byte for byte, so what was signed is what
    the bundle carries; a FM.json given beside it must hold the same Statement.
    """
    by_envelope: dict[Path, Path | None] = {}
    for path in paths:
        name = path.name
        if name.endswith(".dsse.json"):
            statement = path.with_name(name[: -len(".dsse.json")] + ".json")
            by_envelope.setdefault(path, statement if statement.exists() else None)
        elif name.endswith(".json"):
            envelope = path.with_name(name[: -len(".json")] + ".dsse.json")
            if not envelope.exists():
                raise InputError(
                    f"no signed envelope {envelope.name} beside it; a bundle carries signed "
                    "function maps only (stella function-map generate --key ...)",
                    path=path,
                )
            by_envelope[envelope] = path
        else:
            raise InputError("expected FM.json or FM.dsse.json", path=path)
    sources: list[Source] = []
    services: list[str] = []
    for envelope_path, statement_path in sorted(by_envelope.items()):
        parsed = parse_envelope(load_json(envelope_path), envelope_path)
        if parsed.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise MalformedDocumentError(
                f"payloadType is {parsed.payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}",
                path=envelope_path,
            )
        statement = parse_json(parsed.payload, f"{envelope_path} (payload)")
        try:
            validate_statement(statement, FUNCTION_MAP_PREDICATE)
        except StatementError as exc:
            raise MalformedDocumentError(exc.message, path=envelope_path) from exc
        if statement_path is not None and load_json(statement_path) != statement:
            raise InputError(
                f"does not hold the Statement signed in {envelope_path.name}", path=statement_path
            )
        service = statement["predicate"].get("service")
        if not isinstance(service, str) or not SERVICE_RE.match(service):
            raise MalformedDocumentError(
                "expected a service name of letters, digits, '.', '_' or '-'",
                path=envelope_path,
                field="predicate.service",
            )
        if service in services:
            raise InputError(f"two function maps for service {service!r}", path=envelope_path)
        services.append(service)
        statement_name, envelope_name = function_map_paths(service)
        sources.append(Source.of_bytes(statement_name, parsed.payload))
        sources.append(Source.of_bytes(envelope_name, read_bytes(envelope_path)))
    return sources, services


def discover_chains(directories: Sequence[Path]) -> list[Chain]:
    """Each DIR is a chain directory or an evidence root of chain directories."""
    chains: dict[str, Chain] = {}
    for directory in directories:
        for chain_dir in find_chain_dirs(directory):
            chain = _read_chain_dir(chain_dir)
            if chain.chain_id in chains:
                raise InputError(f"chain {chain.chain_id!r} given twice", path=chain_dir)
            chains[chain.chain_id] = chain
    return [chains[key] for key in sorted(chains)]


def _read_chain_dir(directory: Path) -> Chain:
    chain_id = validate_chain_id(directory.name)
    chunks: set[int] = set()
    seals: set[int] = set()
    prune = False
    for entry in sorted(directory.iterdir()):
        if is_temporary(entry.name) or entry.name == LOCK_NAME:
            continue
        if entry.name == PRUNE_RECORD_NAME:
            prune = True
            continue
        parsed = parse_name(entry.name)
        if parsed is None:
            raise InputError("not an evidence chain file; refusing to guess", path=entry)
        sequence, suffix = parsed
        if suffix == CHUNK_SUFFIX:
            chunks.add(sequence)
        elif suffix == SEAL_SUFFIX:
            seals.add(sequence)
        else:
            raise InputError(
                "unsealed evidence: restart the collector on this directory so it recovers and "
                "seals the open chunk, then build again",
                path=entry,
            )
    for sequence in sorted(chunks - seals):
        raise InputError(
            "chunk without its seal", path=directory / f"{sequence:010d}{CHUNK_SUFFIX}"
        )
    for sequence in sorted(seals - chunks):
        raise InputError("seal without its chunk", path=directory / f"{sequence:010d}{SEAL_SUFFIX}")
    return Chain(chain_id, directory, sorted(chunks), prune)


def probe_sources(directory: Path) -> list[Source]:
    lock = directory / "probes.lock.json"
    objects = sorted(directory.glob("*.bpf.o"))
    if not lock.is_file():
        raise InputError("no probes.lock.json in the probes directory", path=directory)
    if not objects:
        raise InputError("no *.bpf.o probe objects", path=directory)
    from ..collector.lockfile import load_lock, verified_bytes

    loaded = load_lock(lock)
    for item in objects:
        verified_bytes(loaded, directory, item.name)  # refuse to ship what the lock disowns
    return [Source.of_file(PROBES_LOCK, lock)] + [
        Source.of_file(PROBES + item.name, item) for item in objects
    ]


def schema_sources(directory: Path = PACKAGE_SCHEMAS) -> list[Source]:
    return [Source.of_file(SCHEMAS + p.name, p) for p in sorted(directory.glob("*.schema.json"))]


def evidence_window(chains: Sequence[Chain]) -> dict[str, str | None]:
    """Earliest and latest observation as the chains' seals declare them (the verifier checks
    this against the seals it verifies, then judges coverage over the map's window up to it)."""
    span = TimeSpan()
    for chain in chains:
        for sequence in chain.sequences:
            path = chain.seal(sequence)
            predicate = parse_seal(read_bytes(path), path).predicate
            span.add_window(predicate.first_observed_at, predicate.last_observed_at)
    return {"first_observed_at": span.first, "last_observed_at": span.last}


def default_label() -> str:
    return build_time().date().isoformat()


# --- the build ----------------------------------------------------------------------------------


def build_bundle(
    *,
    function_maps: Sequence[Path],
    evidence: Sequence[Path],
    signer: Signer,
    output: Path,
    probes: Path | None = None,
    date_label: str | None = None,
    extra: Sequence[Source] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> BuildResult:
    """Write the bundle atomically to `output`; nothing is left behind on error."""
    if not output.name.endswith(BUNDLE_SUFFIX):
        raise InputError(f"the bundle name must end in {BUNDLE_SUFFIX}", path=output)
    label = date_label or default_label()
    if not _LABEL_RE.match(label):
        raise InputError("expected letters, digits, '.', '_' or '-'", field="--date-label")
    created = build_time()
    mtime = int(created.timestamp())
    fm_sources, services = function_map_sources(function_maps)
    if not fm_sources:
        raise InputError("at least one --function-map is required")
    chains = discover_chains(evidence)
    sources = list(fm_sources) + schema_sources() + list(extra)
    if probes is not None:
        sources += probe_sources(probes)
    for chain in chains:
        for sequence in chain.sequences:
            sources.append(
                Source.of_file(chunk_path(chain.chain_id, sequence), chain.chunk(sequence))
            )
            sources.append(
                Source.of_file(seal_path(chain.chain_id, sequence), chain.seal(sequence))
            )
        if chain.has_prune_record:
            sources.append(
                Source.of_file(prune_path(chain.chain_id), chain.directory / PRUNE_RECORD_NAME)
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    view_name = observations_path(label)
    # Work that needs no view, done while worker processes check the chunks (`meanwhile`):
    # every other file hashed for the manifest and the seals' window read. Its errors are
    # raised after the view's, in the order of a pass without workers.
    early: dict[str, Any] = {}

    def meanwhile() -> None:
        ordered = sorted(sources, key=lambda s: entry_order(s.name))  # as they are listed
        early["listed"] = _outcome(lambda: {s.name: _hash_source(s) for s in ordered})
        early["window"] = _outcome(lambda: evidence_window(chains))

    with tempfile.TemporaryDirectory(prefix=".stella-build-", dir=output.parent) as scratch:
        view_path = Path(scratch) / "observations.ndjson"
        view = write_merged_view(
            [[chain.chunk(s) for s in chain.sequences] for chain in chains],
            view_path,
            Path(scratch),
            meanwhile,
        )
        sources.append(_view_source(view_name, view, view_path))
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            duplicate = sorted({n for n in names if names.count(n) > 1})[0]
            raise InputError(f"two inputs map to the same bundle entry {duplicate!r}")
        sources.sort(key=lambda s: entry_order(s.name))
        hashed: dict[str, ManifestFile] = _result(early["listed"])
        listed = [hashed.get(s.name) or _hash_source(s) for s in sources]
        _check_view_chunks(view, sources, listed)
        predicate: dict[str, Any] = {
            "bundle_name": output.name[: -len(BUNDLE_SUFFIX)],
            "created_at": format_timestamp(created),
            "builder": {"id": BUILDER_ID, "version": __version__},
            "services": sorted(services),
            "chains": [chain.chain_id for chain in chains],
            "observations": {
                "path": observations_path(label),
                "records": view.records,
                "order": view.order,
                **({"multiset_sha256": view.multiset} if view.multiset else {}),
            },
            "evidence_window": _result(early["window"]),
        }
        statement = Manifest.build(listed, predicate).to_statement()
        manifest_bytes = canonical_bytes(statement)
        envelope = sign_payload(manifest_bytes, IN_TOTO_PAYLOAD_TYPE, [signer])
        envelope_bytes = canonical_bytes(envelope.to_dict())
        total = sum(s.size for s in sources)
        written = 0

        def advance(count: int) -> None:
            nonlocal written
            written += count
            if progress:
                progress("writing", written, total)

        with atomic_writer(output) as raw:
            hashing = HashingWriter(raw)
            with ReproducibleTarWriter(hashing, mtime, progress=advance) as tar:  # type: ignore[arg-type]
                tar.add_bytes(MANIFEST, manifest_bytes)
                tar.add_bytes(MANIFEST_ENVELOPE, envelope_bytes)
                for source, expected in zip(sources, listed, strict=True):
                    actual = _write_source(tar, source)
                    if actual != expected.sha256:
                        raise InputError(
                            "file changed while the bundle was written", path=source.path
                        )
            size = hashing.count
    return BuildResult(
        output=output,
        sha256=hashing.digest.hexdigest(),
        size=size,
        files=len(sources) + 2,
        services=tuple(sorted(services)),
        chains=tuple(chain.chain_id for chain in chains),
        records=view.records,
    )


def _outcome(work: Callable[[], Any]) -> tuple[Any, StellaError | None]:
    """`work()`'s value, or the input error it raised (for `_result` to raise later)."""
    try:
        return work(), None
    except StellaError as exc:
        return None, exc


def _result(outcome: tuple[Any, StellaError | None]) -> Any:
    value, error = outcome
    if error is not None:
        raise error
    return value


def _view_source(name: str, view: ViewStats, view_path: Path) -> Source:
    if view.streamed:
        return Source(
            name,
            # Named if the chain changes under the build: the chain the view is read from.
            path=view.chunks[0].parent if view.chunks else view_path,
            size=view.size,
            sha256=view.sha256,
            deflated=view.deflated,
            crc=view.crc,
        )
    return Source(
        name,
        path=view_path,
        size=view.size,
        sha256=view.sha256,
        blocks=lambda: view_blocks(view_path),
    )


def _check_view_chunks(view: ViewStats, sources: list[Source], listed: list[ManifestFile]) -> None:
    """A streamed view is its chunks' bytes as they were read: the chunks' own entries, hashed
    since (and again as they are archived), must be those files still."""
    if not view.streamed:
        return
    digests = {source.path: entry.sha256 for source, entry in zip(sources, listed, strict=True)}
    for chunk, sha256 in zip(view.chunks, view.chunk_sha256, strict=True):
        if digests.get(chunk) != sha256:
            raise InputError("file changed while the bundle was written", path=chunk)


def _hash_source(source: Source) -> ManifestFile:
    if source.sha256 is not None:
        return ManifestFile(source.name, source.sha256, source.size)
    if source.data is not None:
        return ManifestFile(source.name, hashlib.sha256(source.data).hexdigest(), source.size)
    assert source.path is not None
    try:
        sha256, size = file_sha256_size(source.path)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=source.path) from exc
    if size != source.size:
        raise InputError("file changed while the bundle was built", path=source.path)
    return ManifestFile(source.name, sha256, size)


def _write_source(tar: ReproducibleTarWriter, source: Source) -> str:
    if source.data is not None:
        return tar.add_bytes(source.name, source.data)
    assert source.path is not None
    if source.deflated is not None:  # a streamed view: the bytes hashed as they were deflated
        assert source.sha256 is not None
        return tar.add_deflated(
            source.name, source.deflated, source.crc, source.size, source.sha256
        )
    if source.blocks is not None:  # a view written to the scratch directory
        return tar.add_blocks(source.name, source.blocks(), source.size, source.path)
    return tar.add_file(source.name, source.path, source.size)
