"""Which function-map node a Tetragon probe hit is: by binary path and symbol, or by SBOM.

User space: the map's `binary_path` + symbol first (then the binary's file name, since a
container sees its files under other mount paths), else the SBOM component that owns the
binary (its `evidence.occurrences` locations, or a component named like the file). Kernel:
`pkg:generic/linux-kernel`, matching a map node when the function, syscall or tracepoint is
the one that node's collector source observes (collector/plan.py KERNEL_SOURCES).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Final

from ..collector.plan import KERNEL_SOURCES
from ..formats.function_map import ExpectedNode, FunctionMap
from ..formats.node_hash import KERNEL_PURL, canonical_purl, node_hash, normalize_symbol
from ..functionmap.sbom import Sbom

# Architecture prefixes of syscall entry points (`__x64_sys_openat` is `sys_openat`).
_SYSCALL_PREFIX_RE: Final = re.compile(
    r"^(?:__x64_|__ia32_|__arm64_|__s390x_|__riscv_|__se_|__do_)"
)
_LIBRARY_SUFFIX_RE: Final = re.compile(r"(?:\.so(?:\.[0-9]+)*|\.a)$")


@dataclass(frozen=True)
class ResolvedNode:
    """What a record needs of the node a probe hit."""

    node_hash: str
    purl: str
    symbol: str
    build_id: str | None = None


class NodeIndex:
    """Look-ups from Tetragon's names to nodes; results cached (few names, many events)."""

    def __init__(self, function_map: FunctionMap | None = None, sbom: Sbom | None = None) -> None:
        self._by_path: dict[tuple[str, str], ExpectedNode] = {}
        self._by_file: dict[tuple[str, str], ExpectedNode | None] = {}
        self._by_hash: dict[str, ExpectedNode] = {}
        self._kernel: list[ExpectedNode] = []
        for node in function_map.nodes() if function_map is not None else []:
            self._by_hash[node.node_hash] = node
            if canonical_purl(node.purl) == KERNEL_PURL:
                self._kernel.append(node)
                continue
            if node.binary_path:
                symbol = normalize_symbol(node.symbol)
                self._by_path[(node.binary_path, symbol)] = node
                key = (posixpath.basename(node.binary_path), symbol)
                # A file name shared by two binaries is ambiguous: no guess.
                self._by_file[key] = None if key in self._by_file else node
        # Binary location / file name → the purl of the SBOM component that owns it, or
        # _AMBIGUOUS when components with different purls claim it: no guess (the first in
        # the SBOM's order won before, and component order means nothing in CycloneDX).
        self._sbom_paths: dict[str, str] = {}
        self._sbom_names: dict[str, str] = {}
        if sbom is not None:
            for component in sbom.all_components():
                for location in _occurrence_locations(component.evidence):
                    _claim(self._sbom_paths, location, component.purl)
                _claim(self._sbom_names, component.name.lower(), component.purl)
        self._user_cache: dict[tuple[str, str], ResolvedNode | None] = {}
        self._kernel_cache: dict[tuple[str, str], ResolvedNode] = {}

    @property
    def has_user_space(self) -> bool:
        return bool(self._by_path or self._by_hash or self._sbom_paths or self._sbom_names)

    def user(self, path: str, symbol: str) -> ResolvedNode | None:
        """The node of `symbol` in the binary at `path`, or None when neither map nor SBOM knows."""
        key = (path, symbol)
        try:
            return self._user_cache[key]
        except KeyError:
            pass
        resolved = self._resolve_user(path, symbol)
        if len(self._user_cache) >= 65536:
            self._user_cache.clear()
        self._user_cache[key] = resolved
        return resolved

    def _resolve_user(self, path: str, symbol: str) -> ResolvedNode | None:
        normalized = normalize_symbol(symbol)
        if not normalized:
            return None
        node = self._by_path.get((path, normalized)) or self._by_file.get(
            (posixpath.basename(path), normalized)
        )
        if node is not None:
            return ResolvedNode(node.node_hash, node.purl, node.symbol, node.build_id)
        purl = self._sbom_paths.get(path)
        if purl is None:
            purl = self._sbom_component_by_name(path)
        if not purl:  # unknown, or claimed by several components
            return None
        hashed = node_hash(purl, normalized)
        known = self._by_hash.get(hashed)
        return ResolvedNode(hashed, purl, normalized, known.build_id if known else None)

    def _sbom_component_by_name(self, path: str) -> str | None:
        name = posixpath.basename(path).lower()
        stem = _LIBRARY_SUFFIX_RE.sub("", name)
        for candidate in (name, stem, stem.removeprefix("lib")):
            purl = self._sbom_names.get(candidate)
            if purl is not None:
                return purl  # _AMBIGUOUS stops the search too: no guess by a shorter name
        return None

    def kernel(self, function: str, event: str = "") -> ResolvedNode:
        """The kernel node for a kprobe function or a `subsystem/event` tracepoint."""
        key = (function, event)
        cached = self._kernel_cache.get(key)
        if cached is None:
            cached = self._resolve_kernel(function, event)
            self._kernel_cache[key] = cached
        return cached

    def _resolve_kernel(self, function: str, target: str) -> ResolvedNode:
        names = _kernel_aliases(function) | _kernel_aliases(target.rpartition("/")[2])
        for node in self._kernel:
            symbol = normalize_symbol(node.symbol)
            source = KERNEL_SOURCES.get(symbol)
            targets = {t for _, _, t in source.variants.values()} if source else set()
            if symbol in names or (target and target in targets) or (names & targets):
                return ResolvedNode(node.node_hash, node.purl, node.symbol, node.build_id)
        # A tracepoint no node names keeps its `subsystem/event` name.
        symbol = function or target
        return ResolvedNode(node_hash(KERNEL_PURL, symbol), KERNEL_PURL, normalize_symbol(symbol))


_AMBIGUOUS: Final = ""


def _claim(index: dict[str, str], key: str, purl: str) -> None:
    """Record that `purl` owns `key`; a second owner with another purl makes it ambiguous."""
    owner = index.get(key)
    if owner is None:
        index[key] = purl
    elif owner != purl:
        index[key] = _AMBIGUOUS


def _kernel_aliases(function: str) -> set[str]:
    """`__x64_sys_openat` → {__x64_sys_openat, sys_openat, openat}."""
    if not function:
        return set()
    names = {function}
    bare = _SYSCALL_PREFIX_RE.sub("", function)
    names.add(bare)
    if bare.startswith("sys_"):
        names.add(bare[4:])
    if bare.startswith("sys_enter_"):
        names.add(bare[len("sys_enter_") :])
    names.discard("")
    return names


def _occurrence_locations(evidence: object) -> list[str]:
    """CycloneDX 1.5 `evidence.occurrences[].location` strings of a component."""
    if not isinstance(evidence, dict):
        return []
    occurrences = evidence.get("occurrences")
    if not isinstance(occurrences, list):
        return []
    return [
        item["location"]
        for item in occurrences
        if isinstance(item, dict) and isinstance(item.get("location"), str)
    ]
