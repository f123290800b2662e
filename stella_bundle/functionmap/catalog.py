"""The built-in catalog of security-relevant symbols (catalog.json), extensible by a user file.

A catalog entry names a component (`openssl`), the package names it goes by in any purl type
(`libssl3`, `openssl-libs`, …, most specific first), and its symbols with a tag. An entry may
`inherit` another entry's symbols (musl → glibc).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..configfile import read_json_config
from ..errors import ConfigError
from .sbom import Component


@dataclass(frozen=True)
class CatalogSymbol:
    symbol: str
    tag: str
    library: str | None = None


@dataclass(frozen=True)
class CatalogComponent:
    name: str
    names: tuple[str, ...]  # package-name globs, most specific first
    symbols: tuple[CatalogSymbol, ...]
    description: str = ""

    def match_rank(self, component: Component) -> int | None:
        """Index of the first name glob the component's package name matches, or None."""
        candidates = {component.package_name.lower(), component.name.lower()}
        for rank, pattern in enumerate(self.names):
            if any(fnmatch.fnmatchcase(c, pattern.lower()) for c in candidates):
                return rank
        return None


@dataclass(frozen=True)
class Catalog:
    components: tuple[CatalogComponent, ...]

    def tag_of(self, symbol: str) -> str | None:
        for entry in self.components:
            for item in entry.symbols:
                if item.symbol == symbol:
                    return item.tag
        return None

    def names_for_package(self, package_name: str) -> set[str]:
        """Catalog entry names whose package-name globs match `package_name` (libssl3 → openssl)."""
        lowered = package_name.lower()
        return {
            entry.name
            for entry in self.components
            if any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in entry.names)
        }

    def tag_for_component(self, component: Component) -> str | None:
        """The first tag of the catalog entry that matches this component (crypto for OpenSSL)."""
        for entry in self.components:
            if entry.symbols and entry.match_rank(component) is not None:
                return entry.symbols[0].tag
        return None

    def matches(
        self, sbom_components: list[Component]
    ) -> list[tuple[CatalogComponent, Component, tuple[str, ...]]]:
        """For each catalog entry, the SBOM component it applies to (best-ranked name wins),
        and the purls of the others matching as well (not used: named in a warning).

        One SBOM component per entry: Debian's `openssl` (the CLI) and `libssl3` (the library)
        both match OpenSSL, and the library is where the symbols live. Between components of
        one rank (libssl3 of two versions or architectures) the least purl is taken, not the
        first in the document: the order of components means nothing in CycloneDX, and the
        map must not depend on it.
        """
        found = []
        for entry in self.components:
            ranked: dict[str, tuple[int, str, Component]] = {}
            for component in sbom_components:
                rank = entry.match_rank(component)
                if rank is None:
                    continue
                key = (rank, component.name, component)
                if component.purl not in ranked or key[:2] < ranked[component.purl][:2]:
                    ranked[component.purl] = key
            if not ranked:
                continue
            best = min(ranked.items(), key=lambda item: (item[1][0], item[0], item[1][1]))
            others = tuple(sorted(purl for purl, key in ranked.items() if key[0] == best[1][0]))
            found.append((entry, best[1][2], tuple(p for p in others if p != best[0])))
        return found


_TOP_KEYS = ("catalog_version", "components", "description")
_ENTRY_KEYS = ("description", "inherit", "library", "name", "names", "symbols")
_SYMBOL_KEYS = ("library", "symbol", "tag")


def _known(item: dict[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    """A key the catalog does not read is refused: a misspelt `nmes` or `inherits` left the
    entry matching no package, or without the symbols it meant to inherit, without a word."""
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown key (allowed: {', '.join(allowed)})",
            path=source,
            field=f"{where}.{unknown[0]}" if where else unknown[0],
        )


def _parse(document: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        raise ConfigError("expected a symbol catalog object", path=source)
    _known(document, _TOP_KEYS, source, "")
    if document.get("catalog_version", 1) != 1:
        raise ConfigError("expected catalog_version 1", path=source, field="catalog_version")
    entries = document.get("components")
    if not isinstance(entries, list):
        raise ConfigError("a catalog needs a 'components' list", path=source, field="components")
    for index, entry in enumerate(entries):
        where = f"components[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError("entry needs a string name", path=source, field=where)
        _known(entry, _ENTRY_KEYS, source, where)
        names = entry.get("names", [entry["name"]])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(
                "expected a list of package names", path=source, field=f"{where}.names"
            )
        for key in ("inherit", "library", "description"):
            if not isinstance(entry.get(key, ""), str):
                raise ConfigError("expected a string", path=source, field=f"{where}.{key}")
        symbols = entry.get("symbols", [])
        if not isinstance(symbols, list):
            raise ConfigError("expected a list", path=source, field=f"{where}.symbols")
        for position, item in enumerate(symbols):
            here = f"{where}.symbols[{position}]"
            if not (
                isinstance(item, dict)
                and isinstance(item.get("symbol"), str)
                and isinstance(item.get("tag"), str)
                and isinstance(item.get("library", ""), str)
            ):
                raise ConfigError("expected {symbol, tag[, library]}", path=source, field=here)
            _known(item, _SYMBOL_KEYS, source, here)
        entry["_source"] = (source, where)
    return entries


def _build(entries: list[dict[str, Any]]) -> Catalog:
    by_name: dict[str, dict[str, Any]] = {}
    for entry in entries:
        existing = by_name.get(entry["name"])
        if existing is None:
            by_name[entry["name"]] = {**entry, "symbols": list(entry.get("symbols", []))}
        else:
            # A user entry with a known name adds names and symbols (same symbol: user wins);
            # what it would change of the entry is refused, not ignored.
            for key in ("inherit", "library"):
                if key in entry and entry[key] != existing.get(key):
                    source, where = entry["_source"]
                    raise ConfigError(
                        f"an entry named like the known {entry['name']!r} adds names and "
                        f"symbols only; its {key} is {existing.get(key)!r}",
                        path=source,
                        field=f"{where}.{key}",
                    )
            merged = {s["symbol"]: s for s in existing["symbols"]}
            merged.update({s["symbol"]: s for s in entry.get("symbols", [])})
            existing["symbols"] = list(merged.values())
            existing["names"] = list(
                dict.fromkeys([*entry.get("names", []), *existing.get("names", [])])
            )
    components = []
    for name, entry in by_name.items():
        symbols: list[dict[str, Any]] = list(entry["symbols"])
        parent = entry.get("inherit")
        if parent is not None and parent not in by_name:
            source, where = entry["_source"]
            raise ConfigError(
                f"no catalog entry named {parent!r} to inherit from (entries: "
                f"{', '.join(sorted(by_name))})",
                path=source,
                field=f"{where}.inherit",
            )
        if parent is not None:
            library = entry.get("library")
            own = {s["symbol"] for s in symbols}
            symbols += [
                {**s, "library": library or s.get("library")}
                for s in by_name[parent]["symbols"]
                if s["symbol"] not in own
            ]
        components.append(
            CatalogComponent(
                name=name,
                names=tuple(entry.get("names", [name])),
                symbols=tuple(
                    CatalogSymbol(s["symbol"], s["tag"], s.get("library")) for s in symbols
                ),
                description=str(entry.get("description", "")),
            )
        )
    return Catalog(tuple(components))


def builtin_catalog_document() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("catalog.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def load_catalog(extra: list[str | Path] | None = None) -> Catalog:
    """The built-in catalog, extended by user catalog files of the same shape."""
    entries = _parse(builtin_catalog_document(), "catalog.json (built-in)")
    for path in extra or []:
        # A configuration file of generate's: read as one, so its errors have a line.
        entries += _parse(read_json_config(path), str(path))
    return _build(entries)
