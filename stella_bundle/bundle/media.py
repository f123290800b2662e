"""Removable media: split a bundle into parts with an index, join them back safely.

`join` checks every part before writing anything, names each bad or missing part, never
modifies or deletes a part, writes through a temporary file, and remembers the parts it has
verified (sha256 keyed by device, inode, size, mtime and ctime: an edit in place whose mtime
was put back still changes the ctime) so a rerun after replacing a bad part does not reread
the good ones. The whole bundle's sha256 is checked while joining in any case; when it
differs, every part is hashed again to name the bad one, and the cache forgets it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from ..attest.signing import sign_to_file
from ..attest.statement import make_statement
from ..attest.verifier import AttestationVerifier
from ..canonical import canonical_bytes
from ..digests import SHA256_HEX_RE, file_sha256
from ..errors import InputError, MalformedDocumentError, PartIntegrityError
from ..formats.roles import RoleName
from ..formats.trust_root import TrustRoot
from ..fsutil import atomic_writer, write_bytes_atomic
from ..jsonio import load_json, load_json_object
from ..sizes import SIZE_RE, parse_size

PARTS_TYPE = "https://stella.ops/bundle-parts/v1"
PARTS_PREDICATE = "https://stella.ops/predicates/bundle-parts/v1"
COPY_CHUNK = 1 << 20

# Media sizes: what one file on the medium may hold.
NAMED_SIZES: dict[str, int] = {
    # FAT32 caps a single file at 4 GiB - 1 byte.
    "fat32": 4 * 1024**3 - 1,
    # A single-layer DVD±R holds 4.70 GB; keep ~4 % for the UDF/ISO file system.
    "dvd": 4_500_000_000,
    # A single-layer BD-R holds 25.0 GB; the same margin.
    "bd": 24_000_000_000,
}


def parse_part_size(text: str) -> int:
    """A size (`parse_size`) or a medium name: fat32, dvd, bd."""
    value = text.strip().lower()
    if value in NAMED_SIZES:
        return NAMED_SIZES[value]
    if not SIZE_RE.match(value):
        raise InputError(
            f"part size {text!r} not understood; expected bytes, a size like 4G or 700M, "
            f"or one of {', '.join(NAMED_SIZES)}",
            field="--part-size",
        )
    return parse_size(value, "--part-size")


def part_name(bundle_name: str, index: int) -> str:
    return f"{bundle_name}.part-{index:04d}"


def index_name(bundle_name: str) -> str:
    return f"{bundle_name}.parts.json"


@dataclass(frozen=True)
class PartInfo:
    name: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class PartsIndex:
    bundle: str
    size: int
    sha256: str
    part_size: int
    parts: tuple[PartInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": PARTS_TYPE,
            "bundle": {"name": self.bundle, "size": self.size, "sha256": self.sha256},
            "part_size": self.part_size,
            "parts": [part.to_dict() for part in self.parts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path) -> PartsIndex:
        def fail(message: str, where: str) -> MalformedDocumentError:
            return MalformedDocumentError(message, path=source, field=where)

        if data.get("_type") != PARTS_TYPE:
            raise fail(f"not a parts index (expected _type {PARTS_TYPE!r})", "_type")
        bundle = data.get("bundle")
        if not isinstance(bundle, dict):
            raise fail("expected an object", "bundle")
        name = bundle.get("name")
        if not isinstance(name, str) or "/" in name or not name or name.startswith("."):
            raise fail("expected a plain file name", "bundle.name")
        size = _nonnegative(bundle.get("size"), fail, "bundle.size")
        sha = bundle.get("sha256")
        if not isinstance(sha, str) or not SHA256_HEX_RE.match(sha):
            raise fail("expected 64 lowercase hex digits", "bundle.sha256")
        part_size = _nonnegative(data.get("part_size"), fail, "part_size")
        raw_parts = data.get("parts")
        if not isinstance(raw_parts, list) or not raw_parts:
            raise fail("expected a non-empty list", "parts")
        parts = []
        for index, item in enumerate(raw_parts, start=1):
            where = f"parts[{index - 1}]"
            if not isinstance(item, dict):
                raise fail("expected an object", where)
            if item.get("name") != part_name(name, index):
                raise fail(f"expected {part_name(name, index)!r}", where + ".name")
            part_sha = item.get("sha256")
            if not isinstance(part_sha, str) or not SHA256_HEX_RE.match(part_sha):
                raise fail("expected 64 lowercase hex digits", where + ".sha256")
            parts.append(
                PartInfo(
                    part_name(name, index),
                    _nonnegative(item.get("size"), fail, where + ".size"),
                    part_sha,
                )
            )
        if sum(p.size for p in parts) != size:
            raise fail("the parts' sizes do not add up to the bundle's size", "parts")
        return cls(name, size, sha, part_size, tuple(parts))

    @classmethod
    def load(cls, path: str | Path) -> PartsIndex:
        return cls.from_dict(load_json_object(path, "a parts index"), path)


def _nonnegative(value: Any, fail: Callable[[str, str], Exception], where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fail("expected a non-negative integer", where)
    return value


# --- split -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitResult:
    index_path: Path
    envelope_path: Path | None
    index: PartsIndex


def split_bundle(
    bundle: Path,
    part_size: int,
    *,
    output_dir: Path | None = None,
    signer: Signer | None = None,
    progress: Callable[[int], None] | None = None,
) -> SplitResult:
    """Write `NAME.part-0001…` and `NAME.parts.json` (and `.parts.dsse.json` with a key)."""
    directory = output_dir or bundle.parent
    if not directory.is_dir():
        raise InputError("output directory does not exist", path=directory)
    try:
        total = bundle.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=bundle) from exc
    count = max(1, -(-total // part_size))
    if count > 9999:
        raise InputError(
            f"{count} parts of {part_size} bytes; at most 9999 (choose a larger --part-size)"
        )
    whole = hashlib.sha256()
    parts: list[PartInfo] = []
    with open(bundle, "rb") as source:
        for number in range(1, count + 1):
            name = part_name(bundle.name, number)
            digest = hashlib.sha256()
            remaining = min(part_size, total - (number - 1) * part_size)
            size = 0
            with atomic_writer(directory / name) as out:
                while remaining > 0:
                    block = source.read(min(COPY_CHUNK, remaining))
                    if not block:
                        raise InputError("bundle shrank while it was split", path=bundle)
                    digest.update(block)
                    whole.update(block)
                    out.write(block)
                    size += len(block)
                    remaining -= len(block)
                    if progress:
                        progress(len(block))
            parts.append(PartInfo(name, size, digest.hexdigest()))
        if source.read(1):
            raise InputError("bundle grew while it was split", path=bundle)
    index = PartsIndex(bundle.name, total, whole.hexdigest(), part_size, tuple(parts))
    index_path = directory / index_name(bundle.name)
    write_bytes_atomic(index_path, canonical_bytes(index.to_dict()))
    envelope_path = None
    if signer is not None:
        subjects = [{"name": p.name, "digest": {"sha256": p.sha256}} for p in parts]
        subjects.append({"name": bundle.name, "digest": {"sha256": index.sha256}})
        statement = make_statement(subjects, PARTS_PREDICATE, index.to_dict())
        envelope_path = directory / f"{bundle.name}.parts.dsse.json"
        sign_to_file(statement, [signer], envelope_path)
    return SplitResult(index_path, envelope_path, index)


# --- join ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinResult:
    output: Path
    sha256: str
    size: int
    checked: tuple[str, ...]  # parts whose sha256 was computed in this run
    reused: tuple[str, ...]  # parts verified by an earlier run and unchanged since


def _cache_path(output: Path) -> Path:
    return output.parent / f".{output.name}.verified-parts.json"


def _stat_key(path: Path) -> dict[str, int]:
    info = path.stat()
    return {
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        # Any write, and `touch -d` putting an old mtime back, sets the ctime to now; no
        # unprivileged call can set it back.
        "ctime_ns": info.st_ctime_ns,
        "inode": info.st_ino,
        "device": info.st_dev,
    }


def _load_cache(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = load_json(path)
    except MalformedDocumentError:
        return {}  # a damaged cache only costs a reread
    return data if isinstance(data, dict) else {}


def verify_parts_signature(index_path: Path, trust_root: TrustRoot) -> None:
    envelope = index_path.with_name(index_path.name[: -len(".parts.json")] + ".parts.dsse.json")
    if not envelope.is_file():
        raise PartIntegrityError(
            f"a trust root was given but {envelope.name} (the signed index) is missing",
            path=index_path,
        )
    verified = AttestationVerifier(trust_root).verify_statement_file(
        envelope, RoleName.BUILDER, predicate_type=PARTS_PREDICATE
    )
    if verified.predicate != load_json(index_path):
        raise PartIntegrityError(
            f"the index differs from the one signed in {envelope.name}", path=index_path
        )


def _check_output(
    output: Path, index_path: Path, part_paths: Sequence[Path], extra_inputs: Sequence[Path]
) -> None:
    """Refuse an output that is a directory or one of the inputs (the index, its signature,
    a part, the trust root), by resolved path and by file identity (hard links)."""
    if output.is_dir():
        raise InputError("the output is an existing directory; expected a file name", path=output)
    envelope = index_path.with_name(index_path.name[: -len(".parts.json")] + ".parts.dsse.json")
    inputs = [
        ("the parts index", index_path),
        ("the signed parts index", envelope),
        *(("a part", path) for path in part_paths),
        *(("an input", path) for path in extra_inputs),
    ]
    target = output.resolve()
    for what, path in inputs:
        same = path.resolve() == target
        if not same and output.exists() and path.exists():
            try:
                same = os.path.samefile(output, path)
            except OSError:
                same = False
        if same:
            raise InputError(f"the output would overwrite {what} ({path})", path=output)


def join_parts(
    index_path: Path,
    output: Path,
    *,
    trust_root: TrustRoot | None = None,
    progress: Callable[[int], None] | None = None,
    extra_inputs: Sequence[Path] = (),
) -> JoinResult:
    index = PartsIndex.load(index_path)
    directory = index_path.parent
    part_paths = [directory / part.name for part in index.parts]
    # Before anything is read or written: the output may be none of the inputs.
    _check_output(output, index_path, part_paths, extra_inputs)
    if trust_root is not None:
        verify_parts_signature(index_path, trust_root)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the output directory: {exc.strerror}", path=output
        ) from exc
    cache_file = _cache_path(output)
    cache = _load_cache(cache_file)
    parts = _PartChecks(cache)
    for part, path in zip(index.parts, part_paths, strict=True):
        parts.check(part, path)
    good = parts.good
    if good != cache:
        # Plain JSON, not canonical: nanosecond mtimes exceed the JCS integer range.
        write_bytes_atomic(cache_file, json.dumps(good, sort_keys=True).encode())
    if parts.problems:
        raise PartIntegrityError(
            f"{len(parts.problems)} of {len(index.parts)} parts bad, nothing joined: "
            + "; ".join(parts.problems),
            path=index_path,
        )
    with atomic_writer(output) as out:
        whole, size = _copy_parts(part_paths, out, progress)
        if size != index.size or whole.hexdigest() != index.sha256:
            # A part changed after its check (or its cache entry lied): name it, forget it.
            changed = [
                part.name
                for part, path in zip(index.parts, part_paths, strict=True)
                if not path.is_file() or file_sha256(path) != part.sha256
            ]
            kept = {name: entry for name, entry in good.items() if name not in changed}
            write_bytes_atomic(cache_file, json.dumps(kept, sort_keys=True).encode())
            raise PartIntegrityError(
                "the joined bundle's sha256 does not match the index: "
                + (
                    f"part(s) {', '.join(changed)} changed since they were checked"
                    if changed
                    else "a part changed while joining"
                )
                + "; nothing written",
                path=index_path,
            )
    return JoinResult(output, whole.hexdigest(), size, tuple(parts.checked), tuple(parts.reused))


class _PartChecks:
    """Each part checked against the index (size, then sha256 unless the cache remembers this
    very file with it): what is wrong, what was hashed, what was reused, the cache to keep."""

    def __init__(self, cache: dict[str, Any]) -> None:
        self.cache = cache
        self.problems: list[str] = []
        self.checked: list[str] = []
        self.reused: list[str] = []
        self.good: dict[str, Any] = {}

    def check(self, part: PartInfo, path: Path) -> None:
        if not path.is_file():
            self.problems.append(f"{part.name}: missing")
            return
        key = _stat_key(path)
        if key["size"] != part.size:
            self.problems.append(f"{part.name}: {key['size']} bytes, expected {part.size}")
            return
        remembered = self.cache.get(part.name)
        if isinstance(remembered, dict) and remembered == {**key, "sha256": part.sha256}:
            self.reused.append(part.name)
            self.good[part.name] = remembered
            return
        actual = file_sha256(path)
        self.checked.append(part.name)
        if actual != part.sha256:
            self.problems.append(f"{part.name}: sha256 {actual[:16]}… expected {part.sha256[:16]}…")
            return
        self.good[part.name] = {**key, "sha256": part.sha256}


def _copy_parts(
    part_paths: Sequence[Path], out: Any, progress: Callable[[int], None] | None
) -> tuple[Any, int]:
    """Append the parts to `out`: their sha256 (running hash) and total size."""
    whole = hashlib.sha256()
    size = 0
    for path in part_paths:
        with open(path, "rb") as handle:
            while block := handle.read(COPY_CHUNK):
                whole.update(block)
                out.write(block)
                size += len(block)
                if progress:
                    progress(len(block))
    return whole, size
