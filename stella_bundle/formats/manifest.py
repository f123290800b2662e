"""The bundle manifest's predicate (DESIGN.md §4, schemas/bundle-manifest.schema.json): every
other file of a bundle (path, sha256, size) and what the builder states about them; and the
rules for the paths a bundle may hold, which the tar reader and writer apply to every member.

The Statement around the predicate (one subject per listed file) is `bundle/manifest.py`.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from ..canonical import MAX_SAFE_INTEGER
from ..digests import SHA256_HEX_RE
from ..errors import ArchiveError, MalformedDocumentError, clipped
from ..timeutil import is_rfc3339_timestamp

MANIFEST: Final = "manifest.json"
MANIFEST_ENVELOPE: Final = "manifest.dsse.json"
# The orders of a bundle's observations view: one chain in its own order, or merged.
ORDER_CHAIN: Final = "chain"
ORDER_MERGED: Final = "merged"
T = TypeVar("T")


def name_key(name: str) -> str:
    """The identity of a member name for duplicate detection: Unicode compatibility-normalised
    and case-folded, so names that a normalising or case-insensitive file system (or a reader
    comparing them as text) would take for one file cannot both be in a bundle."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


# Unicode categories refused in member names: controls (C0 and C1), format characters
# (zero-width, bidirectional overrides, BOM), line and paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


# What a Linux file system takes (PATH_MAX without its NUL, NAME_MAX), in UTF-8 bytes: a
# longer name cannot be extracted by anyone, and is refused before it is echoed anywhere.
MAX_NAME_BYTES = 4095
MAX_COMPONENT_BYTES = 255


def check_member_name(name: str, source: str) -> str:
    """Refuse absolute, escaping, over-long or non-normalised names; return the name."""
    if not name:
        raise ArchiveError("member with an empty name", path=source)
    shown = clipped(name)
    encoded = len(name.encode("utf-8", "surrogatepass"))
    if encoded > MAX_NAME_BYTES:
        raise ArchiveError(
            f"member name {shown!r} is {encoded} bytes long, over the {MAX_NAME_BYTES}-byte "
            "path limit",
            path=source,
        )
    if "\0" in name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ArchiveError(f"member name {shown!r} contains control characters", path=source)
    if name.startswith("/"):
        raise ArchiveError(f"absolute path {shown!r} refused", path=source)
    parts = name.split("/")
    if ".." in parts:
        raise ArchiveError(f"path {shown!r} escapes the archive root ('..') refused", path=source)
    if "\\" in name:
        raise ArchiveError(f"member name {shown!r} contains a backslash", path=source)
    if posixpath.normpath(name) != name or "" in parts or "." in parts:
        raise ArchiveError(f"member name {shown!r} is not a normalised relative path", path=source)
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise ArchiveError(
                f"member name {shown!r} has a component over the {MAX_COMPONENT_BYTES}-byte limit",
                path=source,
            )
    # One spelling per path: NFD (or any non-NFC) spellings are refused, so the NFC and NFD
    # forms of one name can never both be in a bundle.
    # Invisible characters make two names look alike (a zero-width space, a right-to-left
    # override that displays "evidence/a.json" for another name): refused, like controls.
    for char in name:
        if unicodedata.category(char) in _INVISIBLE:
            raise ArchiveError(
                f"member name {shown!r} contains the invisible or control character "
                f"U+{ord(char):04X}",
                path=source,
            )
    if not unicodedata.is_normalized("NFC", name):
        raise ArchiveError(
            f"member name {shown!r} is not Unicode-normalised (NFC) text", path=source
        )
    return name


@dataclass(frozen=True)
class ManifestFile:
    path: str
    sha256: str
    size: int

    def to_subject(self) -> dict[str, Any]:
        return {"name": self.path, "digest": {"sha256": self.sha256}}

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class BuilderInfo:
    id: str
    version: str


@dataclass(frozen=True)
class ViewInfo:
    """The bundle's observations view: where, how many records, in which order."""

    path: str
    records: int
    order: str  # "chain" (one chain in its own order) or "merged"
    multiset_sha256: str | None = None  # the order-independent digest of a merged view


@dataclass(frozen=True)
class EvidenceWindow:
    first_observed_at: str | None
    last_observed_at: str | None


_PREDICATE_FIELDS = frozenset(
    (
        "files",
        "bundle_name",
        "created_at",
        "builder",
        "services",
        "chains",
        "observations",
        "evidence_window",
    )
)


@dataclass(frozen=True)
class ManifestPredicate:
    """The manifest's predicate (schemas/bundle-manifest.schema.json): the files, and what the
    builder states about them. Only `files` is required; the builder writes every field."""

    files: tuple[ManifestFile, ...]
    bundle_name: str | None = None
    created_at: str | None = None
    builder: BuilderInfo | None = None
    services: tuple[str, ...] | None = None
    chains: tuple[str, ...] | None = None
    observations: ViewInfo | None = None
    evidence_window: EvidenceWindow | None = None

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> ManifestPredicate:
        """Strict parse; MalformedDocumentError names the `predicate.` field at fault."""
        reader = _Fields(source)
        reader.exact(data, "predicate", _PREDICATE_FIELDS, required=("files",))
        listed = data["files"]
        if not isinstance(listed, list):
            raise reader.fail("expected a list of files", "predicate.files")
        files = tuple(reader.file(item, f"predicate.files[{i}]") for i, item in enumerate(listed))
        reader.unique_paths(files)
        return cls(
            files=files,
            bundle_name=reader.optional(data, "bundle_name", reader.string),
            created_at=reader.optional(data, "created_at", reader.timestamp),
            builder=reader.optional(data, "builder", reader.builder),
            services=reader.optional(data, "services", reader.strings),
            chains=reader.optional(data, "chains", reader.strings),
            observations=reader.optional(data, "observations", reader.view),
            evidence_window=reader.optional(data, "evidence_window", reader.window),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"files": [item.to_dict() for item in self.files]}
        if self.bundle_name is not None:
            out["bundle_name"] = self.bundle_name
        if self.created_at is not None:
            out["created_at"] = self.created_at
        if self.builder is not None:
            out["builder"] = {"id": self.builder.id, "version": self.builder.version}
        if self.services is not None:
            out["services"] = list(self.services)
        if self.chains is not None:
            out["chains"] = list(self.chains)
        if self.observations is not None:
            view = self.observations
            out["observations"] = {"path": view.path, "records": view.records, "order": view.order}
            if view.multiset_sha256 is not None:
                out["observations"]["multiset_sha256"] = view.multiset_sha256
        if self.evidence_window is not None:
            out["evidence_window"] = {
                "first_observed_at": self.evidence_window.first_observed_at,
                "last_observed_at": self.evidence_window.last_observed_at,
            }
        return out


class _Fields:
    """The checks of the manifest predicate's fields, each error naming the field."""

    def __init__(self, source: str | Path) -> None:
        self.source = source

    def fail(self, message: str, where: str) -> MalformedDocumentError:
        return MalformedDocumentError(message, path=self.source, field=where)

    def exact(self, data: Any, where: str, allowed: Iterable[str], required: Iterable[str]) -> None:
        if not isinstance(data, dict):
            raise self.fail("expected an object", where)
        unknown = sorted(data.keys() - set(allowed))
        if unknown:
            raise self.fail("unknown field", f"{where}.{unknown[0]}")
        for name in required:
            if name not in data:
                raise self.fail("required field is missing", f"{where}.{name}")

    def optional(self, data: dict[str, Any], name: str, check: Callable[[Any, str], T]) -> T | None:
        return check(data[name], f"predicate.{name}") if name in data else None

    def string(self, value: Any, where: str, empty: bool = False) -> str:
        if not isinstance(value, str) or not (value or empty):
            raise self.fail("expected a string" if empty else "expected a non-empty string", where)
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail("expected a list of strings", where)
        return tuple(value)

    def count(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail("expected a non-negative integer (at most 2**53 - 1)", where)
        if not 0 <= value <= MAX_SAFE_INTEGER:
            raise self.fail("expected a non-negative integer (at most 2**53 - 1)", where)
        return value

    def sha256(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not SHA256_HEX_RE.match(value):
            raise self.fail("expected 64 lowercase hex digits", where)
        return value

    def timestamp(self, value: Any, where: str) -> str:
        if not is_rfc3339_timestamp(value):
            raise self.fail("expected an RFC 3339 timestamp", where)
        return str(value)

    def file(self, item: Any, where: str) -> ManifestFile:
        self.exact(item, where, ("path", "sha256", "size"), required=("path", "sha256", "size"))
        name = item["path"]
        if not isinstance(name, str):
            raise self.fail("expected the file's path", where + ".path")
        try:
            check_member_name(name, str(self.source))
        except ArchiveError as exc:
            raise self.fail(f"unsafe path: {exc.message}", where + ".path") from exc
        if name in (MANIFEST, MANIFEST_ENVELOPE):
            raise self.fail("the manifest must not list itself", where + ".path")
        sha = self.sha256(item["sha256"], where + ".sha256")
        return ManifestFile(name, sha, self.count(item["size"], where + ".size"))

    def unique_paths(self, files: tuple[ManifestFile, ...]) -> None:
        keys: dict[str, str] = {}  # name_key -> path, so Unicode/case twins are refused too
        for index, item in enumerate(files):
            where = f"predicate.files[{index}].path"
            twin = keys.get(name_key(item.path))
            if twin == item.path:
                raise self.fail(f"path {item.path!r} is listed twice", where)
            if twin is not None:
                raise self.fail(f"path {item.path!r} is a Unicode/case twin of {twin!r}", where)
            keys[name_key(item.path)] = item.path

    def builder(self, value: Any, where: str) -> BuilderInfo:
        self.exact(value, where, ("id", "version"), ("id", "version"))
        return BuilderInfo(
            self.string(value["id"], where + ".id", empty=True),
            self.string(value["version"], where + ".version", empty=True),
        )

    def view(self, value: Any, where: str) -> ViewInfo:
        fields = ("path", "records", "order", "multiset_sha256")
        self.exact(value, where, fields, required=fields[:3])
        order = value["order"]
        if order not in (ORDER_CHAIN, ORDER_MERGED):
            raise self.fail(f"expected {ORDER_CHAIN!r} or {ORDER_MERGED!r}", where + ".order")
        multiset = value.get("multiset_sha256")
        return ViewInfo(
            self.string(value["path"], where + ".path"),
            self.count(value["records"], where + ".records"),
            order,
            None if multiset is None else self.sha256(multiset, where + ".multiset_sha256"),
        )

    def window(self, value: Any, where: str) -> EvidenceWindow:
        names = ("first_observed_at", "last_observed_at")
        self.exact(value, where, names, required=names)
        first, last = (value[name] for name in names)
        return EvidenceWindow(
            None if first is None else self.timestamp(first, where + ".first_observed_at"),
            None if last is None else self.timestamp(last, where + ".last_observed_at"),
        )
