"""The bundle manifest: an in-toto Statement listing every other file (path, sha256, size), one
subject per file. Its predicate's model is `formats/manifest.py`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attest.statement import BUNDLE_MANIFEST_PREDICATE, make_statement
from ..errors import MalformedDocumentError
from ..formats.manifest import MANIFEST, MANIFEST_ENVELOPE, ManifestFile, ManifestPredicate


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
        """Strictly parse the predicate (`ManifestPredicate`) and check the subjects name
        exactly the same files with the same digests."""

        def fail(message: str, where: str) -> MalformedDocumentError:
            return MalformedDocumentError(message, path=source, field=where)

        parsed = ManifestPredicate.from_dict(statement.get("predicate"), source)
        files = {item.path: item for item in parsed.files}
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
        rest = parsed.to_dict()
        del rest["files"]
        return cls(files, rest)
