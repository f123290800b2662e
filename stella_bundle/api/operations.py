"""What the API does, without HTTP: each function is one endpoint's work over the library.

Function maps are parsed and verified by `functionmap.load.parse_function_map` (the CLI's
loader), reports made by `VerificationResult.report()` (the CLI's), evidence verified and
stored by `store.ingest` (the CLI's `observations ingest`). The routes only translate.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..canonical import canonical_bytes
from ..coverage import VerificationResult, VerifyOptions, verify_observations
from ..coverage.scan import ScannedRecords
from ..errors import InputError, StellaError
from ..evidence.layout import PRUNE_RECORD_NAME, chunk_name, seal_name, validate_chain_id
from ..formats.record import validate_record
from ..formats.trust_root import TrustRoot
from ..fsutil import write_bytes_atomic
from ..functionmap.load import LoadedFunctionMap, is_envelope_document, parse_function_map
from ..jsonio import parse_json
from ..store import (
    IngestResult,
    ObservationStore,
    encode_report,
    ingest_evidence,
    ingest_ndjson,
    load_stored_function_map,
    raise_conflicts,
    stored_form,
    verify_stored,
)
from ..store.base import StoredFunctionMap
from ..timeutil import check_window, format_timestamp, parse_time_field, parse_timestamp
from .models import BODY_SOURCE, ChainUpload, EvidenceUpload


class NotFound(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def normalise_digest(identifier: str) -> str:
    return identifier if identifier.startswith("sha256:") else "sha256:" + identifier


# --- function maps --------------------------------------------------------------------------


def store_function_map(
    store: ObservationStore, raw: bytes, trust_root: TrustRoot
) -> tuple[StoredFunctionMap, bool]:
    """A posted map (Statement or DSSE envelope). An envelope must verify against the trust
    root (function-map role) and is stored as checked; a bare Statement is stored unsigned.

    True when the store changed: a new digest, or a checked envelope upgrading a copy stored
    without a checked signature. Otherwise (an unsigned re-post after a signed one, a second
    envelope after a checked one) the stored copy stands and is answered as stored already."""
    source = "<request body>"
    signed = is_envelope_document(parse_json(raw, source))
    loaded = parse_function_map(raw, source, trust_root if signed else None)
    form = stored_form(loaded, raw)
    if store.put_function_map(form):
        stored = store.get_function_map(form.digest) or form
        return stored, True
    return store.get_function_map(form.digest) or form, False


def get_function_map(store: ObservationStore, identifier: str) -> StoredFunctionMap:
    digest = normalise_digest(identifier)
    stored = store.get_function_map(digest)
    if stored is None:
        raise _not_found(digest)
    return stored


def _not_found(digest: str) -> NotFound:
    return NotFound(f"no function map {digest} in this store")


# Parsed maps by (store, digest): parsing and schema-checking a map again on every verify cost
# more than the verification itself. A digest names immutable content, but its signature status
# can be upgraded once (unsigned, or signed unchecked -> checked; possibly by another process):
# a cached checked map is final, an unchecked one is reused only while the store still says so.
_MAP_CACHE_SIZE: Final = 64
_map_cache: OrderedDict[tuple[str, str], LoadedFunctionMap] = OrderedDict()
_map_cache_lock = threading.Lock()


def loaded_function_map(store: ObservationStore, identifier: str) -> LoadedFunctionMap:
    key = (store.url, normalise_digest(identifier))
    with _map_cache_lock:
        cached = _map_cache.get(key)
        if cached is not None:
            _map_cache.move_to_end(key)
    if cached is not None and cached.signature_checked:
        return cached
    # An unchecked map's status is read on every verification: from an index, not the row.
    checked = store.signature_checked(key[1])
    if checked is None:
        raise _not_found(key[1])  # before anything else
    if cached is not None and not checked:
        return cached
    loaded = load_stored_function_map(store, key[1])
    with _map_cache_lock:
        _map_cache[key] = loaded
        while len(_map_cache) > _MAP_CACHE_SIZE:
            _map_cache.popitem(last=False)
    return loaded


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyAnswer:
    """A verification as the API answers it."""

    encoded: bytes  # the report (`function-map verify --format json`'s document), as stored
    verified: bool
    report_id: int


def verify(
    store: ObservationStore,
    identifier: str,
    options: VerifyOptions,
    observations: list[Any] | ScannedRecords | None,
) -> VerifyAnswer:
    """Verify and store the report, serialised once for the store and the answer.

    With `observations`, those records are verified (each validated as the CLI validates a
    line); without, the store's records of the window, aggregated by the store."""
    loaded = loaded_function_map(store, identifier)
    result: VerificationResult
    if observations is not None:
        result = verify_observations(loaded, observations, options, source="<request body>")
    else:
        result = verify_stored(store, loaded, options)
    document = result.report().to_dict()
    encoded = encode_report(document)
    stored = store.put_report(
        loaded.digest,
        result.window["from"],
        result.window["to"],
        result.verified,
        document,
        encoded=encoded,
    )
    return VerifyAnswer(encoded, result.verified, stored.id)


# --- coverage over time ---------------------------------------------------------------------


def _bounds(
    store: ObservationStore, window_from: str | None, window_to: str | None
) -> tuple[dt.datetime, dt.datetime] | None:
    start = parse_time_field(window_from, "from")
    end = parse_time_field(window_to, "to")
    if start is None or end is None:
        status = store.status()
        if start is None and status.first_observed_at is not None:
            start = parse_timestamp(status.first_observed_at)
        if end is None and status.last_observed_at is not None:
            end = parse_timestamp(status.last_observed_at)
    if start is None or end is None:
        return None  # nothing stored and no range given
    check_window(start, end)
    return start, end


def coverage(
    store: ObservationStore,
    identifier: str,
    window_from: str | None,
    window_to: str | None,
    windows: int,
) -> dict[str, Any]:
    """Per path and per tag over the range, and the trend: the range cut into `windows`
    consecutive windows, each verified alone (same engine, same rule as `verify`)."""
    loaded = loaded_function_map(store, identifier)
    stored = get_function_map(store, identifier)
    bounds = _bounds(store, window_from, window_to)
    options = (
        VerifyOptions(window_from=bounds[0], window_to=bounds[1]) if bounds else VerifyOptions()
    )
    result = verify_stored(store, loaded, options)
    trend: list[dict[str, Any]] = []
    if bounds is not None:
        start, end = bounds
        step = (end - start) / windows
        for index in range(windows):
            low = start + step * index
            high = end if index == windows - 1 else start + step * (index + 1)
            part = verify_stored(store, loaded, VerifyOptions(window_from=low, window_to=high))
            trend.append(
                {
                    "from": format_timestamp(low),
                    "to": format_timestamp(high),
                    "observation_rate": part.observation_rate,
                    "target_rate": part.target_rate,
                    "verified": part.verified,
                    "records_in_window": part.records["in_window"],
                    "per_tag": {
                        tag: values["observation_rate"] for tag, values in part.per_tag.items()
                    },
                }
            )
    return {
        "function_map": stored.summary(),
        "window": result.window,
        "verified": result.verified,
        "observation_rate": result.observation_rate,
        "target_rate": result.target_rate,
        "per_path": result.per_path_breakdown,
        "per_tag": result.per_tag,
        "missing_paths": [
            entry["path_id"] for entry in result.per_path_breakdown if entry["status"] == "missing"
        ],
        "unexpected_symbols": result.unexpected_symbols,
        "trend": trend,
    }


# --- evidence -------------------------------------------------------------------------------


def _decode(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"expected base64: {exc}", field=field) from exc


@contextmanager
def _scratch(work_dir: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="stella-api-", dir=work_dir) as name:
        yield Path(name)


def _write_chain(root: Path, index: int, chain: ChainUpload) -> None:
    where = f"chains[{index}]"
    validate_chain_id(chain.chain_id)
    directory = root / chain.chain_id
    if directory.exists():
        raise InputError(f"chain {chain.chain_id} given twice", field=f"{where}.chain_id")
    directory.mkdir()
    seen: set[int] = set()
    for number, item in enumerate(chain.chunks):
        here = f"{where}.chunks[{number}]"
        if item.sequence in seen:
            raise InputError(f"sequence {item.sequence} given twice", field=f"{here}.sequence")
        seen.add(item.sequence)
        (directory / chunk_name(item.sequence)).write_bytes(_decode(item.chunk, f"{here}.chunk"))
        (directory / seal_name(item.sequence)).write_bytes(_decode(item.seal, f"{here}.seal"))
    if chain.prune_record is not None:
        (directory / PRUNE_RECORD_NAME).write_bytes(
            _decode(chain.prune_record, f"{where}.prune_record")
        )


def _name_in_upload(exc: StellaError, root: Path, chains: list[ChainUpload]) -> None:
    """An error about the scratch copy names the upload's own field instead: the server's
    temporary directory means nothing to the client (and is none of its business)."""
    if exc.path is None or not Path(exc.path).is_relative_to(root):
        return
    parts = Path(exc.path).relative_to(root).parts
    index = next(
        (i for i, chain in enumerate(chains) if parts and chain.chain_id == parts[0]), None
    )
    where = "chains" if index is None else f"chains[{index}]"
    exc.path = f"{BODY_SOURCE} {'/'.join((where, *parts[1:]))}"


def ingest(
    store: ObservationStore,
    upload: EvidenceUpload,
    trust_root: TrustRoot,
    work_dir: Path | None,
    batch: int,
) -> tuple[IngestResult, bool]:
    """Store an upload: sealed chains verified whole with the chain verifier first (the files
    are laid out as a collector writes them, then `ingest_evidence`), or plain records stored
    unsigned (`ingest_ndjson`). One store transaction; idempotent per (chain, sequence)."""
    if (upload.chains is None) == (upload.records is None):
        raise InputError("give exactly one of chains (sealed evidence) or records (unsigned)")
    with _scratch(work_dir) as root:
        if upload.chains is not None:
            for index, chain in enumerate(upload.chains):
                _write_chain(root, index, chain)
            try:
                result = ingest_evidence(store, root, trust_root)
            except StellaError as exc:
                _name_in_upload(exc, root, upload.chains)
                raise
            signed = True
        else:
            assert upload.records is not None
            lines = [
                canonical_bytes(validate_record(record, "<request body>", number)) + b"\n"
                for number, record in enumerate(upload.records, start=1)
            ]
            path = root / "records.ndjson"
            write_bytes_atomic(path, b"".join(lines))
            result = ingest_ndjson(store, [path], batch)
            signed = False
    raise_conflicts(result, store)
    return result, signed
