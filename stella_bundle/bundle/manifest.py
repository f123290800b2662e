"""The bundle manifest: an in-toto Statement listing every other file (path, sha256, size)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attest.statement import BUNDLE_MANIFEST_PREDICATE, make_statement
from ..errors import ArchiveError, MalformedDocumentError
from .layout import MANIFEST, MANIFEST_ENVELOPE
from .reader import check_member_name, name_key

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ManifestFile:
    path: str
    sha256: str
    size: int

    def to_subject(self) -> dict[str, Any]:
        return {"name": self.path, "digest": {"sha256": self.sha256}}

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass
class Manifest:
    """Parsed manifest: files by path plus the predicate (services, chains, build facts)."""

    files: dict[str, ManifestFile]
    predicate: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, files: Iterable[ManifestFile], predicate: dict[str, Any]) -> Manifest:
        by_path: dict[str, ManifestFile] = {}
        for item in files:
            if item.path in (MANIFEST, MANIFEST_ENVELOPE):
                raise ValueError("the manifest does not list itself")
            by_path[item.path] = item
        return cls(by_path, dict(predicate))

    def to_statement(self) -> dict[str, Any]:
        ordered = [self.files[path] for path in sorted(self.files)]
        predicate = {**self.predicate, "files": [item.to_dict() for item in ordered]}
        return make_statement(
            [item.to_subject() for item in ordered], BUNDLE_MANIFEST_PREDICATE, predicate
        )

    @classmethod
    def from_statement(cls, statement: dict[str, Any], source: str | Path) -> Manifest:
        """Strictly parse `predicate.files` (safe path, sha256, size) and check the subjects
        name exactly the same files with the same digests."""

        def fail(message: str, where: str) -> MalformedDocumentError:
            return MalformedDocumentError(message, path=source, field=where)

        predicate = statement.get("predicate")
        if not isinstance(predicate, dict):
            raise fail("expected an object", "predicate")
        listed = predicate.get("files")
        if not isinstance(listed, list):
            raise fail("expected a list of files", "predicate.files")
        files: dict[str, ManifestFile] = {}
        keys: dict[str, str] = {}  # name_key -> path, so Unicode/case twins are refused too
        for index, item in enumerate(listed):
            where = f"predicate.files[{index}]"
            if not isinstance(item, dict):
                raise fail("expected an object", where)
            name = item.get("path")
            if not isinstance(name, str):
                raise fail("expected the file's path", where + ".path")
            try:
                check_member_name(name, str(source))
            except ArchiveError as exc:
                raise fail(f"unsafe path: {exc.message}", where + ".path") from exc
            if name in (MANIFEST, MANIFEST_ENVELOPE):
                raise fail("the manifest must not list itself", where + ".path")
            sha = item.get("sha256")
            if not isinstance(sha, str) or not _SHA256_RE.match(sha):
                raise fail("expected 64 lowercase hex digits", where + ".sha256")
            size = item.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise fail("expected a non-negative integer", where + ".size")
            if name in files:
                raise fail(f"path {name!r} is listed twice", where + ".path")
            if name_key(name) in keys:
                twin = keys[name_key(name)]
                raise fail(f"path {name!r} is a Unicode/case twin of {twin!r}", where + ".path")
            keys[name_key(name)] = name
            files[name] = ManifestFile(name, sha, size)
        subjects = statement.get("subject")
        if not isinstance(subjects, list):
            raise fail("expected a list", "subject")
        named = {}
        for index, subject in enumerate(subjects):
            if not isinstance(subject, dict) or not isinstance(subject.get("name"), str):
                raise fail("expected an object with a name", f"subject[{index}]")
            named[subject["name"]] = (subject.get("digest") or {}).get("sha256")
        expected = {path: item.sha256 for path, item in files.items()}
        if named != expected:
            differing = sorted(set(named.items()) ^ set(expected.items()))
            raise fail(
                f"subjects and predicate.files disagree (first difference: {differing[0][0]!r})",
                "subject",
            )
        rest = {key: value for key, value in predicate.items() if key != "files"}
        return cls(files, rest)
