"""Generating a function map from an SBOM (DESIGN.md §4, issue 3).

Expected paths come from four sources: the symbol catalog matched to SBOM components, CycloneDX
call stacks and occurrences, a static-analysis call graph, and the ELF symbols of binaries given
with `--binary-path`. The same inputs, build id and SOURCE_DATE_EPOCH give the same bytes.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from ..attest.statement import FUNCTION_MAP_PREDICATE, make_statement, subject_for_bytes
from ..digests import PREFIXED_SHA256_RE
from ..errors import ConfigError, InputError, MalformedDocumentError
from ..formats.flat import read_flat, read_list
from ..formats.function_map import (
    DEFAULT_MIN_RATE,
    DEFAULT_WINDOW_SECONDS,
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
    priority_of,
)
from ..formats.node_hash import KERNEL_PURL, canonical_purl, normalize_symbol
from ..formats.scope import NO_SCOPE_WARNING, Scope
from ..timeutil import build_time, format_timestamp
from .callgraph import DEFAULT_MAX_DEPTH, DEFAULT_MAX_PATHS, enumerate_paths, load_callgraph
from .catalog import Catalog, load_catalog
from .elf import ElfIndex, index_binary
from .frames import frame_symbol
from .sbom import Component, Sbom, load_sbom

# Kernel event sources the collector can observe (collector/plan.py KERNEL_SOURCES), by tag:
# the node symbol and the probe types that can see it.
KERNEL_EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "file": ("openat", ("tracepoint", "kprobe")),
    "exec": ("execve", ("tracepoint",)),
    "net": ("tcp_connect", ("kprobe", "tracepoint")),
}
_NATIVE_PROBES = ("uprobe", "uretprobe")


@dataclass
class GenerateOptions:
    sbom: str | Path
    service: str
    hot_functions: list[str] = field(default_factory=list)
    min_rate: float = DEFAULT_MIN_RATE
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    build_id: str | None = None
    static_analysis: str | Path | None = None
    binary_paths: dict[str, str] = field(default_factory=dict)  # purl → ELF path
    tag_rates: dict[str, float] = field(default_factory=dict)
    optional: list[str] = field(default_factory=list)
    image_digest: str | None = None
    fail_on_unexpected: bool = True
    catalogs: list[str | Path] = field(default_factory=list)
    kernel_events: list[str] = field(default_factory=list)  # file, exec, net
    max_depth: int = DEFAULT_MAX_DEPTH
    max_paths: int = DEFAULT_MAX_PATHS
    # The workload (formats.scope selectors, e.g. {"executable": "/usr/sbin/nginx"}).
    scope: dict[str, str] = field(default_factory=dict)


NOT_OBSERVABLE_REASON = "not observable: the binary does not define this symbol"


@dataclass(frozen=True)
class NotObservable:
    purl: str
    symbol: str
    binary_path: str
    path_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "purl": self.purl,
            "symbol": self.symbol,
            "binary_path": self.binary_path,
            "path_ids": list(self.path_ids),
            "reason": NOT_OBSERVABLE_REASON,
        }


@dataclass
class GenerationResult:
    statement: dict[str, Any]
    function_map: FunctionMap
    not_observable: list[NotObservable]
    warnings: list[str]
    sources: dict[str, int]  # paths kept per source

    def written(self, output: Path, signature: Path | None) -> MapWritten:
        """The result `function-map generate` prints once the map (and its envelope) are
        written at `output` (and `signature`)."""
        return MapWritten(
            service=self.function_map.service,
            expected_paths=len(self.function_map.expected_paths),
            nodes=len(self.function_map.nodes()),
            paths_by_source=dict(sorted(self.sources.items())),
            not_observable=tuple(self.not_observable),
            warnings=tuple(self.warnings),
            output=str(output),
            signature=None if signature is None else str(signature),
        )


@dataclass(frozen=True)
class MapWritten:
    """What `function-map generate` prints: the map written, its paths by source and the
    symbols its binaries do not define (dropped: they could never be observed)."""

    service: str
    expected_paths: int
    nodes: int
    paths_by_source: Mapping[str, int]
    not_observable: tuple[NotObservable, ...]
    warnings: tuple[str, ...]
    output: str
    signature: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "expected_paths": self.expected_paths,
            "nodes": self.nodes,
            "paths_by_source": dict(self.paths_by_source),
            "not_observable": [item.to_dict() for item in self.not_observable],
            "warnings": list(self.warnings),
            "output": self.output,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> MapWritten:
        values = read_flat(_WrittenFields, data, source, "generate")
        dropped = []
        for index, item in enumerate(read_list(values["not_observable"], source, "not_observable")):
            entry = read_flat(_NotObservableFields, item, source, f"not_observable[{index}]")
            if entry["reason"] != NOT_OBSERVABLE_REASON:
                raise MalformedDocumentError(
                    f"expected {NOT_OBSERVABLE_REASON!r}",
                    path=source,
                    field=f"not_observable[{index}].reason",
                )
            dropped.append(
                NotObservable(
                    entry["purl"], entry["symbol"], entry["binary_path"], tuple(entry["path_ids"])
                )
            )
        return cls(
            service=values["service"],
            expected_paths=values["expected_paths"],
            nodes=values["nodes"],
            paths_by_source=values["paths_by_source"],
            not_observable=tuple(dropped),
            warnings=tuple(values["warnings"]),
            output=values["output"],
            signature=values["signature"],
        )


@dataclass(frozen=True)
class _WrittenFields:
    service: str
    expected_paths: int
    nodes: int
    paths_by_source: dict[str, int]
    not_observable: object
    warnings: list[str]
    output: str
    signature: str | None


@dataclass(frozen=True)
class _NotObservableFields:
    purl: str
    symbol: str
    binary_path: str
    path_ids: list[str]
    reason: str


@dataclass
class _Candidate:
    source: str  # catalog, callstack, occurrence, static-analysis, binary
    label: str  # readable part of the path id
    nodes: list[tuple[str, str]]  # (purl, symbol)
    tag: str
    names: set[str]  # component names usable in COMPONENT/SYMBOL globs
    probe_types: tuple[str, ...] | None = None
    dedup_scope: str = ""  # call stacks stay one path per stack even when frames coincide


def _glob_subjects(tag: str, names: Iterable[str], symbol: str) -> list[str]:
    return [f"{tag}/{symbol}", symbol, *(f"{name}/{symbol}" for name in names)]


def _matches(globs: Sequence[str], subjects: Iterable[str]) -> bool:
    subjects = list(subjects)
    return any(fnmatch.fnmatchcase(s, g) for g in globs for s in subjects)


def _versionless(purl: str) -> str:
    parsed = PackageURL.from_string(purl)
    return str(
        PackageURL(type=parsed.type, namespace=parsed.namespace, name=parsed.name).to_string()
    )


def _component_names(component: Component, extra: Iterable[str] = ()) -> set[str]:
    return {component.name, component.package_name, *extra}


def _catalog_candidates(sbom: Sbom, catalog: Catalog, warnings: list[str]) -> list[_Candidate]:
    found = []
    for entry, component, others in catalog.matches(list(sbom.all_components())):
        if others:
            warnings.append(
                f"catalog entry {entry.name}: {len(others) + 1} components match it equally; "
                f"its symbols are expected of {component.purl}, not of {', '.join(others)}"
            )
        for item in entry.symbols:
            found.append(
                _Candidate(
                    source="catalog",
                    label=f"{entry.name}/{item.symbol}",
                    nodes=[(component.purl, item.symbol)],
                    tag=item.tag,
                    names=_component_names(component, [entry.name]),
                    probe_types=_NATIVE_PROBES if item.library else None,
                )
            )
    return found


class _FrameOwners:
    """The component a call-stack frame belongs to: the one whose namespace (group, else the
    purl's namespace) is the longest prefix of the frame's package.

    Several of one namespace (a Maven group's modules): the stack's own component if it is
    one of them, else the least purl, never the first in the document (whose order means
    nothing in CycloneDX). Namespaces are indexed once: a frame costs a look-up per level of
    its package, not a pass over every component (frames x components purl parses made a
    large SBOM's generation quadratic)."""

    def __init__(self, sbom: Sbom) -> None:
        grouped: dict[str, list[Component]] = {}
        for component in sbom.all_components():
            namespace = component.group or PackageURL.from_string(component.purl).namespace
            if namespace:
                grouped.setdefault(namespace, []).append(component)
        # Per namespace: its least component (by purl, then name) and the purls it has.
        self.by_namespace = {
            namespace: (min(found, key=lambda c: (c.purl, c.name)), {c.purl for c in found})
            for namespace, found in grouped.items()
        }

    def owner(self, frame: Mapping[str, Any], stack_owner: Component) -> Component:
        # A class file path (`com/example/Logger.class`) names its package with slashes.
        package = str(frame.get("package") or frame.get("module") or "").replace("/", ".")
        parts = package.split(".")
        for length in range(len(parts), 0, -1):
            found = self.by_namespace.get(".".join(parts[:length]))
            if found is not None:
                least, purls = found
                return stack_owner if stack_owner.purl in purls else least
        return stack_owner


# What `sbom.skipped` counts: evidence the schema allows but that names no function.
SKIPPED_FRAME = "callstack_frame_without_function"
SKIPPED_OCCURRENCE = "occurrence_without_symbol"


def _evidence_candidates(
    sbom: Sbom, catalog: Catalog, warnings: list[str], skipped: dict[str, int]
) -> list[_Candidate]:
    found = []
    owners = _FrameOwners(sbom)
    for component in sbom.all_components():
        evidence = component.evidence
        callstack = evidence.get("callstack")
        frames = callstack.get("frames") if isinstance(callstack, dict) else None
        if isinstance(frames, list) and frames:
            nodes: list[tuple[str, str]] = []
            names = _component_names(component)
            for frame in frames:
                if not isinstance(frame, dict):
                    continue
                frame_owner = owners.owner(frame, component)
                symbol = frame_symbol(frame, (frame_owner.purl, component.purl))
                if symbol is None:
                    skipped[SKIPPED_FRAME] = skipped.get(SKIPPED_FRAME, 0) + 1
                    continue
                node = (frame_owner.purl, symbol)
                names |= _component_names(frame_owner)
                # Frames differing only by line are the same function: one node.
                if not nodes or nodes[-1] != node:
                    nodes.append(node)
            if nodes:
                tag = catalog.tag_for_component(component) or "general"
                found.append(
                    _Candidate(
                        source="callstack",
                        label=component.package_name,
                        nodes=nodes,
                        tag=tag,
                        names=names,
                        dedup_scope=component.purl,
                    )
                )
            else:
                warnings.append(f"{component.purl}: call stack has no frame with a function name")
        occurrences = evidence.get("occurrences")
        if isinstance(occurrences, list):
            for occurrence in occurrences:
                symbol = occurrence.get("symbol") if isinstance(occurrence, dict) else None
                if not (isinstance(symbol, str) and symbol.strip()):
                    skipped[SKIPPED_OCCURRENCE] = skipped.get(SKIPPED_OCCURRENCE, 0) + 1
                else:
                    found.append(
                        _Candidate(
                            source="occurrence",
                            label=f"{component.package_name}/{normalize_symbol(symbol)}",
                            nodes=[(component.purl, symbol)],
                            tag=catalog.tag_of(normalize_symbol(symbol))
                            or catalog.tag_for_component(component)
                            or "general",
                            names=_component_names(component),
                        )
                    )
    return found


def _static_candidates(
    options: GenerateOptions, catalog: Catalog, warnings: list[str]
) -> list[_Candidate]:
    assert options.static_analysis is not None
    graph = load_callgraph(options.static_analysis)

    def tag_of(node: Any) -> str:
        return str(node.tag or catalog.tag_of(normalize_symbol(node.symbol)) or "general")

    def names_of(purl: str) -> set[str]:
        name = str(PackageURL.from_string(purl).name)
        return {name, *catalog.names_for_package(name)}

    def is_sink(node: Any) -> bool:
        if options.hot_functions:
            return _matches(
                options.hot_functions,
                _glob_subjects(tag_of(node), names_of(node.purl), normalize_symbol(node.symbol)),
            )
        return tag_of(node) != "general"

    enumeration = enumerate_paths(graph, is_sink, options.max_depth, options.max_paths)
    if enumeration.truncated:
        warnings.append(
            f"{graph.source}: path enumeration stopped at the bounds "
            f"(max depth {options.max_depth}, max paths {options.max_paths}); some paths omitted"
        )
    return [
        _Candidate(
            source="static",
            label=normalize_symbol(path[-1].symbol),
            nodes=[(n.purl, n.symbol) for n in path],
            tag=tag_of(path[-1]),
            names=set().union(*(names_of(n.purl) for n in path)),
        )
        for path in enumeration.paths
    ]


def _kernel_candidates(events: Sequence[str]) -> list[_Candidate]:
    """Kernel-level paths (purl pkg:generic/linux-kernel): what every process does, observed
    by tracepoints or kprobes whatever library it uses."""
    found = []
    for tag in sorted(set(events)):
        if tag not in KERNEL_EVENTS:
            raise ConfigError(
                f"unknown kernel event {tag!r}; expected one of {', '.join(KERNEL_EVENTS)}",
                field="--kernel-events",
            )
        symbol, probes = KERNEL_EVENTS[tag]
        found.append(
            _Candidate(
                source="kernel",
                label=f"linux-kernel/{symbol}",
                nodes=[(KERNEL_PURL, symbol)],
                tag=tag,
                names={"linux-kernel", "kernel"},
                probe_types=probes,
            )
        )
    return found


def _binary_candidates(
    sbom: Sbom, catalog: Catalog, binaries: Mapping[str, ElfIndex], globs: Sequence[str]
) -> list[_Candidate]:
    """Defined functions of each --binary-path matched by a COMPONENT/SYMBOL or SYMBOL glob.

    Tag globs (`crypto/*`) do not enumerate binaries: they would pull in whole libraries.
    """
    component_globs = [g for g in globs if "/" not in g or g.split("/", 1)[0] not in _TAG_NAMES]
    if not component_globs:
        return []
    found = []
    for purl, elf in sorted(binaries.items()):
        component = _component_for_purl(sbom, purl)
        names = _component_names(component) if component else {PackageURL.from_string(purl).name}
        for entry in catalog.components:
            if component is not None and entry.match_rank(component) is not None:
                names.add(entry.name)
        for symbol in sorted(elf.functions):
            if _matches(component_globs, [symbol, *(f"{n}/{symbol}" for n in names)]):
                found.append(
                    _Candidate(
                        source="binary",
                        label=f"{sorted(names)[0]}/{symbol}",
                        nodes=[(component.purl if component else purl, symbol)],
                        tag=catalog.tag_of(symbol) or "general",
                        names=names,
                        probe_types=_NATIVE_PROBES,
                    )
                )
    return found


_TAG_NAMES = frozenset({"crypto", "auth", "net", "file", "exec", "general"})


def _component_for_purl(sbom: Sbom, purl: str) -> Component | None:
    exact = canonical_purl(purl)
    loose = _versionless(exact)
    fallback = None
    for component in sbom.all_components():
        if component.purl == exact:
            return component
        # Another version: the least purl, not the first in the document's order.
        if _versionless(component.purl) == loose and (
            fallback is None or component.purl < fallback.purl
        ):
            fallback = component
    return fallback


def _parse_image_digest(value: str | None) -> str | None:
    if value is None:
        return None
    if not PREFIXED_SHA256_RE.match(value):
        raise InputError(
            f"expected sha256:<64 lowercase hex digits>, found {value!r}", field="--image-digest"
        )
    return value.split(":", 1)[1]


def _check_rates(options: GenerateOptions) -> None:
    if not 0 <= options.min_rate <= 1:
        raise ConfigError(
            f"expected a rate between 0 and 1, found {options.min_rate}", field="--min-rate"
        )
    if options.window_seconds <= 0:
        raise ConfigError("expected a positive number of seconds", field="--window")
    for tag, rate in options.tag_rates.items():
        if not 0 <= rate <= 1:
            raise ConfigError(f"rate for tag {tag!r} must be between 0 and 1", field="--tag-rate")


def _path_id(candidate: _Candidate, hashes: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join([candidate.dedup_scope, *hashes]).encode()).hexdigest()
    return f"{candidate.source}/{candidate.label}/{digest[:12]}"


def generate_function_map(options: GenerateOptions) -> GenerationResult:
    """Build the function-map Statement; nothing is written here."""
    _check_rates(options)
    image_sha = _parse_image_digest(options.image_digest)
    sbom = load_sbom(options.sbom)
    catalog = load_catalog(list(options.catalogs))
    warnings: list[str] = []

    binaries: dict[str, ElfIndex] = {}
    for purl, path in options.binary_paths.items():
        binaries[canonical_purl(purl)] = index_binary(str(path))

    candidates = _catalog_candidates(sbom, catalog, warnings)
    skipped: dict[str, int] = {}
    candidates += _evidence_candidates(sbom, catalog, warnings, skipped)
    if skipped:
        counts = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        warnings.append(
            f"{options.sbom}: passed over (counted in the map's sbom.skipped): {counts}"
        )
    if options.static_analysis is not None:
        candidates += _static_candidates(options, catalog, warnings)
    candidates += _binary_candidates(sbom, catalog, binaries, options.hot_functions)
    candidates += _kernel_candidates(options.kernel_events)

    collected = _PathCollector(options, binaries)
    # Of two candidates giving one path (a component listed twice, under two names), the
    # first added is kept: added in an order of their own, not the SBOM's.
    for candidate in sorted(candidates, key=_candidate_order):
        collected.add(candidate)
    paths = collected.paths
    warnings += [
        f"--hot-functions {glob!r} matched no symbol"
        for glob in options.hot_functions
        if not _glob_matches_a_node(glob, paths.values())
    ]
    if not paths:
        warnings.append("the function map has no expected paths")

    ordered = tuple(sorted(paths.values(), key=lambda p: (-p.priority, p.path_id)))
    scope = Scope.from_dict(options.scope, "--scope") if options.scope else None
    if scope is None:
        warnings.append(NO_SCOPE_WARNING)
    function_map = FunctionMap(
        service=options.service,
        build_id=options.build_id or f"sbom-{sbom.digest.split(':', 1)[1][:16]}",
        generated_at=format_timestamp(build_time()),
        sbom=SbomRef(
            digest=sbom.digest,
            format=sbom.format,
            spec_version=sbom.spec_version,
            skipped=skipped,
        ),
        coverage=Coverage(
            min_observation_rate=float(options.min_rate),
            window_seconds=int(options.window_seconds),
            fail_on_unexpected=options.fail_on_unexpected,
            tag_min_rates={k: float(v) for k, v in sorted(options.tag_rates.items())},
        ),
        hot_functions=tuple(options.hot_functions),
        expected_paths=ordered,
        scope=scope,
    )
    subjects = [subject_for_bytes(Path(options.sbom).name, sbom.data_bytes)]
    if image_sha is not None:
        subjects.append({"name": "image", "digest": {"sha256": image_sha}})
    statement = make_statement(subjects, FUNCTION_MAP_PREDICATE, function_map.to_dict())
    from .load import validate_predicate_schema

    validate_predicate_schema(statement["predicate"], "generated function map")
    return GenerationResult(
        statement=statement,
        function_map=function_map,
        not_observable=[
            NotObservable(purl, symbol, binary, tuple(ids))
            for (purl, symbol), (binary, ids) in sorted(collected.not_observable.items())
        ],
        warnings=warnings,
        sources=collected.sources,
    )


class _PathCollector:
    """The expected paths of the candidates: hot ones only (with --hot-functions), each once,
    none through a symbol its binary does not define (those are reported not observable)."""

    def __init__(self, options: GenerateOptions, binaries: dict[str, ElfIndex]) -> None:
        self.options = options
        self.binaries = binaries
        self.binaries_loose = {_versionless(purl): elf for purl, elf in binaries.items()}
        self.paths: dict[str, ExpectedPath] = {}
        self.seen: set[tuple[str, ...]] = set()
        self.not_observable: dict[tuple[str, str], tuple[str, list[str]]] = {}
        self.sources: dict[str, int] = {}

    def is_hot(self, candidate: _Candidate) -> bool:
        hot = self.options.hot_functions
        return not hot or any(
            _matches(hot, _glob_subjects(candidate.tag, candidate.names, normalize_symbol(symbol)))
            for _, symbol in candidate.nodes
        )

    def nodes(self, candidate: _Candidate) -> tuple[list[ExpectedNode], list[tuple[str, str, str]]]:
        """The candidate's nodes, and those (purl, symbol, binary) the binary does not define."""
        nodes = []
        blocked = []
        for purl, symbol in candidate.nodes:
            elf = self.binaries.get(canonical_purl(purl)) or self.binaries_loose.get(
                _versionless(purl)
            )
            if elf is not None and not elf.defines(symbol):
                blocked.append((canonical_purl(purl), normalize_symbol(symbol), elf.path))
            nodes.append(
                ExpectedNode.create(
                    purl,
                    symbol,
                    binary_path=elf.path if elf else None,
                    build_id=elf.build_id if elf else None,
                    probe_types=candidate.probe_types,
                )
            )
        return nodes, blocked

    def add(self, candidate: _Candidate) -> None:
        if not self.is_hot(candidate):
            return
        nodes, blocked = self.nodes(candidate)
        hashes = tuple(n.node_hash for n in nodes)
        key = (candidate.dedup_scope, *hashes)
        if key in self.seen:
            return
        self.seen.add(key)
        path_id = _path_id(candidate, hashes)
        if blocked:
            for purl, symbol, binary in blocked:
                entry = self.not_observable.setdefault((purl, symbol), (binary, []))
                entry[1].append(path_id)
            return
        optional = self.options.optional
        subjects = _glob_subjects(candidate.tag, candidate.names, nodes[-1].symbol)
        self.paths[path_id] = ExpectedPath(
            path_id=path_id,
            tag=candidate.tag,
            priority=priority_of(candidate.tag),
            optional=bool(optional)
            and (_matches(optional, subjects) or _matches(optional, [path_id])),
            nodes=tuple(nodes),
        )
        self.sources[candidate.source] = self.sources.get(candidate.source, 0) + 1


def _candidate_order(candidate: _Candidate) -> tuple[Any, ...]:
    return (
        candidate.source,
        candidate.label,
        candidate.dedup_scope,
        candidate.nodes,
        candidate.tag,
        sorted(candidate.names),
        candidate.probe_types or (),
    )


def _glob_matches_a_node(glob: str, paths: Iterable[ExpectedPath]) -> bool:
    return any(
        _matches([glob], _glob_subjects(p.tag, [], n.symbol))
        or _matches([glob], [f"{PackageURL.from_string(n.purl).name}/{n.symbol}"])
        for p in paths
        for n in p.nodes
    )


def signature_path(output: str | Path) -> Path:
    """`function-map.json` → `function-map.dsse.json` (beside it)."""
    path = Path(output)
    name = path.name
    stem = name[: -len(".json")] if name.endswith(".json") else name
    return path.with_name(stem + ".dsse.json")
