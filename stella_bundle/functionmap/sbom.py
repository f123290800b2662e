"""Reading CycloneDX JSON SBOMs: components (nested too), purls, and their evidence."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from ..errors import MalformedDocumentError
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

    @property
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


def _component(raw: Any, source: str, where: str, *, is_root: bool = False) -> Component | None:
    if not isinstance(raw, dict):
        raise MalformedDocumentError("expected a component object", path=source, field=where)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedDocumentError("component has no name", path=source, field=f"{where}.name")
    version = raw.get("version") if isinstance(raw.get("version"), str) else None
    group = raw.get("group") if isinstance(raw.get("group"), str) else None
    purl = raw.get("purl")
    if isinstance(purl, str) and purl:
        try:
            canonical = canonical_purl(purl)
        except Exception as exc:
            raise MalformedDocumentError(
                f"invalid purl {purl!r}", path=source, field=f"{where}.purl"
            ) from exc
    else:
        canonical = str(PackageURL(type="generic", name=name, version=version).to_string())
    evidence = raw.get("evidence") if isinstance(raw.get("evidence"), dict) else {}
    return Component(
        name=name,
        version=version,
        group=group,
        purl=canonical,
        purl_type=str(PackageURL.from_string(canonical).type),
        evidence=evidence or {},
        is_root=is_root,
    )


def _walk(raw: Any, source: str, where: str) -> Iterator[Component]:
    if raw is None:
        return
    if not isinstance(raw, list):
        raise MalformedDocumentError("expected a list of components", path=source, field=where)
    for index, item in enumerate(raw):
        here = f"{where}[{index}]"
        component = _component(item, source, here)
        if component is not None:
            yield component
        yield from _walk(item.get("components"), source, f"{here}.components")


_SPEC_RE = re.compile(r"1\.(?:[2-9]|[1-9][0-9])")


def load_sbom(path: str | Path) -> Sbom:
    """Parse a CycloneDX JSON SBOM; anything else is refused with a clear message."""
    source = str(path)
    data = read_bytes(path)
    document = parse_json(data, source)
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        found = document.get("bomFormat") if isinstance(document, dict) else type(document).__name__
        hint = (
            " (SPDX is not supported)"
            if isinstance(document, dict) and "spdxVersion" in document
            else ""
        )
        raise MalformedDocumentError(
            f'not a CycloneDX SBOM: expected "bomFormat": "CycloneDX", found {found!r}{hint}',
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
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    root_raw = (metadata or {}).get("component")
    root = _component(root_raw, source, "metadata.component", is_root=True) if root_raw else None
    components = tuple(_walk(document.get("components"), source, "components"))
    return Sbom(
        path=source,
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
        data_bytes=data,
        spec_version=spec,
        format="CycloneDX",
        root=root,
        components=components,
    )
