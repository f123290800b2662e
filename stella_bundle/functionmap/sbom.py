"""Reading CycloneDX JSON SBOMs (1.2 and later 1.x): components (nested too, and those of
`metadata.component`), purls, and their evidence. The fields read are checked against the
schema's types and refused naming their path (`components[3].evidence.callstack.frames[0]`);
CycloneDX XML, SPDX JSON and SPDX tag-value are refused by name."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from ..errors import MalformedDocumentError, clipped
from ..formats.node_hash import canonical_purl
from ..jsonio import parse_json, read_bytes


@dataclass(frozen=True)
class Component:
    name: str
    version: str | None
    group: str | None
    purl: str  # canonical; pkg:generic/NAME@VERSION when the SBOM gives none
    purl_type: str
    evidence: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    is_root: bool = False

    @cached_property  # parsed once: catalog matching asks for it per entry and component
    def package_name(self) -> str:
        return str(PackageURL.from_string(self.purl).name)


@dataclass(frozen=True)
class Sbom:
    path: str
    digest: str  # sha256:<hex> of the file bytes
    data_bytes: bytes = field(repr=False)
    spec_version: str
    format: str
    root: Component | None
    components: tuple[Component, ...]

    def all_components(self) -> Iterator[Component]:
        if self.root is not None:
            yield self.root
        yield from self.components


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _fail(expected: str, value: Any, source: str, where: str) -> MalformedDocumentError:
    return MalformedDocumentError(
        f"expected {expected}, found {_kind(value)}", path=source, field=where
    )


def _string(raw: dict[str, Any], key: str, source: str, where: str) -> str | None:
    """A string field of the CycloneDX schema, or None when absent: any other type is refused
    (a numeric version was dropped, a numeric purl made the component pkg:generic)."""
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail("a string", value, source, f"{where}.{key}")
    return value


def _objects(raw: dict[str, Any], key: str, source: str, where: str) -> list[dict[str, Any]]:
    """A list of objects of the schema (absent: empty)."""
    items = raw.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise _fail("a list", items, source, f"{where}.{key}")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _fail("an object", item, source, f"{where}.{key}[{index}]")
    return items


# The frame fields frame_symbol reads (CycloneDX 1.5+ `evidence.callstack.frames[]`).
_FRAME_TEXT = ("package", "module", "function", "fullFilename")


def _evidence(raw: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    """The component's `evidence` as generate reads it (call stack frames, occurrences), its
    shape checked here so that nothing of it is passed over for being of another type."""
    evidence = raw.get("evidence")
    if evidence is None:
        return {}
    where = f"{where}.evidence"
    if not isinstance(evidence, dict):
        raise _fail("an object", evidence, source, where)
    callstack = evidence.get("callstack")
    if callstack is not None:
        if not isinstance(callstack, dict):
            raise _fail("an object", callstack, source, f"{where}.callstack")
        for index, frame in enumerate(_objects(callstack, "frames", source, f"{where}.callstack")):
            for key in _FRAME_TEXT:
                _string(frame, key, source, f"{where}.callstack.frames[{index}]")
    for index, occurrence in enumerate(_objects(evidence, "occurrences", source, where)):
        for key in ("symbol", "location"):  # location: the Tetragon bridge's binary → purl
            _string(occurrence, key, source, f"{where}.occurrences[{index}]")
    return evidence


def _component(raw: Any, source: str, where: str, *, is_root: bool = False) -> Component:
    if not isinstance(raw, dict):
        raise _fail("a component object", raw, source, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedDocumentError("component has no name", path=source, field=f"{where}.name")
    version = _string(raw, "version", source, where)
    group = _string(raw, "group", source, where)
    purl = _string(raw, "purl", source, where)
    if purl:
        try:
            canonical = canonical_purl(purl)
        except Exception as exc:
            # packageurl's reason (`purl is missing the required "pkg" scheme component`).
            reason = str(exc.__cause__ or exc).split(": '", 1)[0]
            raise MalformedDocumentError(
                f"invalid purl {clipped(purl)!r}: {clipped(reason, 160)}",
                path=source,
                field=f"{where}.purl",
            ) from exc
    else:
        canonical = str(PackageURL(type="generic", name=name, version=version).to_string())
    return Component(
        name=name,
        version=version,
        group=group,
        purl=canonical,
        purl_type=str(PackageURL.from_string(canonical).type),
        evidence=_evidence(raw, source, where),
        is_root=is_root,
    )


def _walk(raw: Any, source: str, where: str) -> Iterator[Component]:
    if raw is None:
        return
    if not isinstance(raw, list):
        raise MalformedDocumentError("expected a list of components", path=source, field=where)
    for index, item in enumerate(raw):
        here = f"{where}[{index}]"
        yield _component(item, source, here)
        yield from _walk(item.get("components"), source, f"{here}.components")


_SPDX_NOT_READ = (
    "SPDX is not read: a function map comes from CycloneDX JSON, whose call stacks and "
    "occurrences SPDX 2.x has no field for; convert it first, e.g. `cyclonedx convert "
    "--input-format spdxjson --output-format json`"
)


def _refuse_other_encodings(data: bytes, source: str) -> None:
    """CycloneDX XML and SPDX tag-value are named for what they are (a JSON parse error at
    column 1 says nothing of the fix)."""
    head = data.removeprefix(b"\xef\xbb\xbf").lstrip()[:64]
    if head.startswith(b"<"):
        raise MalformedDocumentError(
            "an XML document: CycloneDX XML is not read, only CycloneDX JSON; convert it "
            "first, e.g. `cyclonedx convert --input-format xml --output-format json`",
            path=source,
            line=1,
        )
    if head.startswith(b"SPDXVersion:") or b"\nSPDXVersion:" in data[:4096]:
        raise MalformedDocumentError(f"an SPDX tag-value document: {_SPDX_NOT_READ}", path=source)


_SPEC_RE = re.compile(r"1\.(?:[2-9]|[1-9][0-9])")


def load_sbom(path: str | Path) -> Sbom:
    """Parse a CycloneDX JSON SBOM; anything else is refused with a clear message naming the
    field and, once the JSON is read, its line and column."""
    source = str(path)
    data = read_bytes(path)
    _refuse_other_encodings(data, source)
    document = parse_json(data, source)
    try:
        return _read_sbom(document, data, source)
    except MalformedDocumentError as exc:
        if exc.field is None or exc.line is not None:
            raise
        from ..configfile import place_in_json

        place = place_in_json(data, exc.field)
        if place is None:
            raise
        raise MalformedDocumentError(
            exc.message, path=source, line=place[0], column=place[1], field=exc.field
        ) from exc


def _read_sbom(document: Any, data: bytes, source: str) -> Sbom:
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        found = document.get("bomFormat") if isinstance(document, dict) else type(document).__name__
        hint = (
            f" ({_SPDX_NOT_READ})"
            if isinstance(document, dict) and "spdxVersion" in document
            else ""
        )
        raise MalformedDocumentError(
            f'not a CycloneDX SBOM: expected "bomFormat": "CycloneDX", found '
            f"{clipped(repr(found), 80)}{hint}",
            path=source,
            field="bomFormat",
        )
    spec = document.get("specVersion")
    if not isinstance(spec, str):
        raise MalformedDocumentError(
            "CycloneDX SBOM lacks a string specVersion", path=source, field="specVersion"
        )
    if _SPEC_RE.fullmatch(spec) is None:
        # Minor versions of CycloneDX 1 only add fields; another major (or a malformed
        # version) may mean what 1.x does not, so it is not read as if it were 1.x.
        raise MalformedDocumentError(
            f"specVersion {spec[:40]!r} is not a CycloneDX 1.x version (expected 1.2 to 1.7, "
            "or a later 1.x)",
            path=source,
            field="specVersion",
        )
    # null is absent, as for every optional field here (serialisers write nulls).
    metadata = document.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise _fail("an object", metadata, source, "metadata")
    root_raw = metadata.get("component")
    root = None
    # The BOM's own subject, and the components it is made of (`metadata.component.components`,
    # as a BOM of a BOM writes them: read like the top-level list, not passed over).
    nested: tuple[Component, ...] = ()
    if root_raw is not None:
        root = _component(root_raw, source, "metadata.component", is_root=True)
        nested = tuple(_walk(root_raw.get("components"), source, "metadata.component.components"))
    components = nested + tuple(_walk(document.get("components"), source, "components"))
    return Sbom(
        path=source,
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
        data_bytes=data,
        spec_version=spec,
        format="CycloneDX",
        root=root,
        components=components,
    )
