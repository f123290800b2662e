"""Verifying observations against a function map, offline (DESIGN.md §4, issue 3).

Inputs are any iterable of observation records (`verify_observations`, used by the bundle
verifier on evidence chains) or NDJSON files (`verify_files`, the fast path: a canonical-line
scan, split over worker processes for large plain files). Memory holds per-node state only.
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import gc
import itertools
import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
import pybase64
from packageurl import PackageURL

from ..canonical import MAX_SAFE_INTEGER, saturating_sum
from ..errors import InputError, InternalError, StellaError
from ..formats.coverage import CoverageReport
from ..formats.function_map import ExpectedNode, ExpectedPath, FunctionMap
from ..formats.node_hash import canonical_purl, normalize_symbol
from ..formats.record import PROBE_TYPES
from ..formats.scope import NO_SCOPE_WARNING, Scope, scope_from_predicate
from ..functionmap.load import LoadedFunctionMap, is_envelope_document, parse_function_map
from ..heap import gc_paused, keep_freed_blocks
from ..jsonio import read_bytes
from ..timeutil import check_window, format_timestamp
from .fastdecode import DecodedRecords
from .scan import NodeAggregate, ObservationAggregator, ScannedRecords, probe_types_of

if TYPE_CHECKING:
    from ..formats.trust_root import TrustRoot

# Plain files at least this large are split across worker processes.
# Confidence that an observation really shows the function ran, by how it was seen.
DEFAULT_PROBE_WEIGHTS: Final[Mapping[str, float]] = {
    "uprobe": 1.0,
    "uretprobe": 1.0,
    "usdt": 1.0,
    "fentry": 0.9,
    "fexit": 0.9,
    "tracepoint": 0.8,
    "raw_tracepoint": 0.8,
    "kprobe": 0.7,
    "kretprobe": 0.7,
    "unknown": 0.5,
}

PARALLEL_MIN_BYTES = 32 << 20

STATUS_OBSERVED = "observed"
STATUS_PARTIAL = "partial"
STATUS_MISSING = "missing"

VERSION_DRIFT = "version drift"
NORMALISATION_MISMATCH = "normalisation mismatch"


@dataclass
class VerifyOptions:
    window_from: dt.datetime | None = None
    window_to: dt.datetime | None = None
    fail_on_unexpected: bool | None = None  # None: the map's coverage setting
    probe_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PROBE_WEIGHTS))
    workers: int | None = None  # None: one per CPU, for large plain files

    def __post_init__(self) -> None:
        check_window(self.window_from, self.window_to)
        unknown = set(self.probe_weights) - set(PROBE_TYPES)
        if unknown:
            raise InputError(
                f"unknown probe type {min(unknown)!r}; expected one of {', '.join(PROBE_TYPES)}",
                field="--probe-weight",
            )
        for name, weight in self.probe_weights.items():
            if not 0 <= weight <= 1:
                raise InputError(
                    f"weight of {name} must be between 0 and 1", field="--probe-weight"
                )
        self.probe_weights = {**DEFAULT_PROBE_WEIGHTS, **self.probe_weights}

    def window_strings(self) -> tuple[str | None, str | None]:
        return (
            format_timestamp(self.window_from) if self.window_from else None,
            format_timestamp(self.window_to) if self.window_to else None,
        )


def _round(value: float) -> float:
    return round(value, 6)


@dataclass
class VerificationResult:
    """The coverage answer; `to_dict` is what the verification report embeds."""

    verified: bool
    observation_rate: float
    target_rate: float
    per_path_breakdown: list[dict[str, Any]]
    per_tag: dict[str, dict[str, Any]]
    unexpected_symbols: list[dict[str, Any]]
    missing_symbols: list[dict[str, Any]]
    confidence: dict[str, Any]
    diagnoses: list[dict[str, Any]]
    window: dict[str, str | None]
    records: dict[str, int]
    failures: list[str]
    fail_on_unexpected: bool
    service: str
    function_map: dict[str, Any] = field(default_factory=dict)
    # The workload the map names and what was counted against it (see scope_section).
    scope: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def report(self) -> CoverageReport:
        """The verification report `function-map verify` prints and the API returns: the
        coverage part and the function map it was judged against (one construction for both).
        Built from the engine's own values, so not checked again (`from_dict` checks)."""
        return CoverageReport({**self.to_dict(), "function_map": self.function_map})

    def to_dict(self) -> dict[str, Any]:
        """The coverage part of a verification report (schemas/verification-report.schema.json)."""
        return {
            "service": self.service,
            "verified": self.verified,
            "observation_rate": self.observation_rate,
            "target_rate": self.target_rate,
            "per_path_breakdown": self.per_path_breakdown,
            "per_tag": self.per_tag,
            "unexpected_symbols": self.unexpected_symbols,
            "missing_symbols": self.missing_symbols,
            "confidence": self.confidence["overall"],
            "confidence_detail": self.confidence,
            "diagnoses": self.diagnoses,
            "window": self.window,
            "records": self.records,
            "failures": self.failures,
            "scope": self.scope,
            "warnings": self.warnings,
        }


def _unwrap(function_map: FunctionMap | LoadedFunctionMap) -> tuple[FunctionMap, dict[str, Any]]:
    if isinstance(function_map, LoadedFunctionMap):
        return function_map.function_map, {
            "digest": function_map.digest,
            "source": function_map.source,
            "signed": function_map.signed,
            "signature_checked": function_map.signature_checked,
            "service": function_map.function_map.service,
        }
    return function_map, {"service": function_map.service}


def new_aggregator(
    function_map: FunctionMap | LoadedFunctionMap, options: VerifyOptions | None = None
) -> ObservationAggregator:
    fmap = (
        function_map.function_map if isinstance(function_map, LoadedFunctionMap) else function_map
    )
    window_from, window_to = (options or VerifyOptions()).window_strings()
    return ObservationAggregator(fmap.node_hashes, window_from, window_to, fmap.scope)


def verify_observations(
    function_map: FunctionMap | LoadedFunctionMap,
    records: Iterable[Mapping[str, Any]] | ScannedRecords,
    options: VerifyOptions | None = None,
    *,
    source: str = "<records>",
    validated: bool = False,
) -> VerificationResult:
    """Verify a stream of observation records (dicts); each is validated as it is read unless
    the reader already did (`validated=True`, e.g. the evidence chain reader). Records the
    compiled scan checked (an API body's, `ScannedRecords`) are folded from their bytes."""
    options = options or VerifyOptions()
    aggregator = new_aggregator(function_map, options)
    if isinstance(records, ScannedRecords):
        if aggregator.add_scanned(records):
            return evaluate(function_map, aggregator, options)
        records = DecodedRecords(records.decoded())
    # A list of parsed records (an API body) is checked and folded whole at C speed when every
    # record passes; otherwise one by one, which names the first bad record.
    if not validated and isinstance(records, list) and aggregator.add_parsed(records):
        return evaluate(function_map, aggregator, options)
    if isinstance(records, DecodedRecords):
        records = records.as_dicts()
    for index, record in enumerate(records, start=1):
        aggregator.add_record(dict(record), source, index, validated=validated)
    return evaluate(function_map, aggregator, options)


def verify_files(
    function_map: FunctionMap | LoadedFunctionMap,
    paths: Sequence[str | Path],
    options: VerifyOptions | None = None,
) -> VerificationResult:
    """Verify NDJSON observation files (plain or .zst), with the fast canonical scan."""
    options = options or VerifyOptions()
    aggregator = new_aggregator(function_map, options)
    scan_paths(aggregator, paths, options.workers)
    return evaluate(function_map, aggregator, options)


# --- parallel scanning ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    path: str
    start: int | None  # None: the whole file (compressed files are never split)
    end: int | None


def _split_units(paths: Sequence[str | Path], workers: int) -> list[_Unit]:
    units: list[_Unit] = []
    for raw in paths:
        path = str(raw)
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as handle:
                magic = handle.read(4)
        except OSError:
            units.append(_Unit(path, None, None))  # the scan reports the error
            continue
        if workers < 2 or size < PARALLEL_MIN_BYTES or magic == b"\x28\xb5\x2f\xfd":
            units.append(_Unit(path, None, None))
            continue
        bounds = [0]
        with open(path, "rb") as handle:
            for part in range(1, workers):
                handle.seek(size * part // workers)
                handle.readline()
                position = handle.tell()
                if bounds[-1] < position < size:
                    bounds.append(position)
        bounds.append(size)
        units += [_Unit(path, a, b) for a, b in itertools.pairwise(bounds)]
    return units


# What forked scan processes inherit instead of receiving it pickled with every job (a
# 20,000-node map is 1.4 MB of hashes): the expected node hashes (None: the map is not read
# yet, the workers keep every node unsplit), the time window, the scope.
_FORK_STATE: tuple[list[str] | None, str | None, str | None, Scope | None] = ([], None, None, None)


def _scan_unit(unit: _Unit) -> tuple[str, Any]:
    # The 8 MiB blocks it reads, each freed before the next, reused instead of given back to the
    # kernel and faulted in again (heap.py): 0.04 s of system time per 96 MB scanned.
    keep_freed_blocks()
    expected, window_from, window_to, scope = _FORK_STATE
    aggregator = ObservationAggregator(
        expected, window_from, window_to, scope, unsplit=expected is None
    )
    try:
        if unit.start is None or unit.end is None:
            aggregator.scan_file(unit.path)
        else:
            aggregator.scan_range(unit.path, unit.start, unit.end)
    except StellaError as exc:
        return "error", (type(exc), exc.message, exc.path, exc.line, exc.field)
    return "ok", aggregator.export()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _lines_before(path: str, offset: int) -> int:
    count = 0
    with open(path, "rb") as handle:
        remaining = offset
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 20))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count


def _parallel_units(paths: Sequence[str | Path], workers: int) -> list[_Unit] | None:
    """The units to spread over worker processes, or None when one process should scan."""
    units = _split_units(paths, workers)
    total = sum(_size(u.path) for u in {u.path: u for u in units}.values())
    if workers < 2 or len(units) < 2 or total < PARALLEL_MIN_BYTES // 4:
        return None
    return units


class _RunningScan:
    """Units being scanned by forked worker processes; `fold` waits for them and folds their
    states into an aggregator in input order (the first error in input order is raised)."""

    def __init__(
        self,
        units: list[_Unit],
        workers: int,
        state: tuple[list[str] | None, str | None, str | None, Scope | None],
    ) -> None:
        global _FORK_STATE
        self.units = units
        _FORK_STATE = state
        # Frozen objects are left alone by the children's garbage collector, which would
        # otherwise touch (and so copy-on-write) the whole inherited heap. An executor, not a
        # Pool: a worker killed (OOM) breaks its futures instead of leaving this process
        # waiting forever. With fork every worker starts at the first submit.
        gc.freeze()
        try:
            self.pool = ProcessPoolExecutor(
                min(workers, len(units)), mp_context=multiprocessing.get_context("fork")
            )
            self.futures = [self.pool.submit(_scan_unit, unit) for unit in units]
        finally:
            gc.unfreeze()
            _FORK_STATE = ([], None, None, None)

    def cancel(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def fold(self, aggregator: ObservationAggregator, *, routed: bool = False) -> None:
        try:
            results = [future.result() for future in self.futures]
        except BrokenProcessPool as exc:
            raise InternalError(
                "a scanning worker process died (killed, or out of memory?)"
            ) from exc
        finally:
            self.cancel()
        for unit, (status, payload) in zip(self.units, results, strict=True):
            if status == "error":
                kind, message, path, line, field_name = payload
                if line is not None and unit.start:
                    line += _lines_before(unit.path, unit.start)
                raise kind(message, path=path, line=line, field=field_name)
        for unit, (_, payload) in zip(self.units, results, strict=True):
            aggregator.merge(payload, routed=routed)
            if unit.path not in aggregator.files:
                aggregator.files.append(unit.path)


def scan_paths(
    aggregator: ObservationAggregator, paths: Sequence[str | Path], workers: int | None = None
) -> None:
    """Scan files into `aggregator`: large plain files split at line boundaries, and many
    files (evidence chunks), spread over worker processes when there is enough to read."""
    workers = workers if workers is not None else (os.cpu_count() or 1)
    units = _parallel_units(paths, workers)
    if units is None:
        for path in paths:
            aggregator.scan_file(path)
        return
    # With no more units than workers, this process scans the first unit itself, straight into
    # the aggregator, while the others run: one fork, one result to pickle and merge fewer.
    local = units[0] if len(units) <= workers else None
    state = (
        list(aggregator.expected),
        aggregator.window_from,
        aggregator.window_to,
        aggregator.scope,
    )
    running = _RunningScan(units[1:] if local is not None else units, workers, state)
    try:
        if local is not None:
            # Its errors come first in file order; leaving the block cancels what has not started.
            if local.start is None or local.end is None:
                aggregator.scan_file(local.path)
            else:
                aggregator.scan_range(local.path, local.start, local.end)
                if local.path not in aggregator.files:
                    aggregator.files.append(local.path)
    except BaseException:
        running.cancel()
        raise
    running.fold(aggregator)


class _NoHint(Exception):
    """The quick read of a map cannot tell its scope: read the map first."""


def _scope_hint(raw: bytes) -> Scope | None:
    """The scope of the map in `raw`, from a quick read (orjson, no checks) before the full
    one; raises _NoHint when that read cannot tell. Only a map that then loads is used, and
    its checked scope must equal this one."""
    # A Statement whose bytes spell no "scope" key has none, read or not (a key's letters can
    # only be escaped as \u, and an envelope's payload would need "payloadType"): no parse of
    # the whole map (30 ms for 10,000 paths) on the way to starting the scan.
    if b'"scope"' not in raw and b"\\u" not in raw and b'"payloadType"' not in raw:
        return None
    try:
        document = orjson.loads(raw)
        if is_envelope_document(document):
            document = orjson.loads(pybase64.b64decode(document["payload"], validate=True))
        return scope_from_predicate(document["predicate"], None)
    except (orjson.JSONDecodeError, binascii.Error, LookupError, TypeError, ValueError) as exc:
        raise _NoHint from exc
    except StellaError as exc:
        raise _NoHint from exc


def verify_map_files(
    map_path: str | Path,
    paths: Sequence[str | Path],
    options: VerifyOptions | None = None,
    trust_root: TrustRoot | None = None,
) -> tuple[LoadedFunctionMap, VerificationResult]:
    """`load_function_map(map_path, trust_root)`, then `verify_files` against it: the same map
    and result (or the same first error: the map's before the files'), with the scan's worker
    processes started first, so that reading and checking the map (a third of a second for
    10,000 paths) overlaps the scan. The workers learn which nodes are the map's when their
    states are merged; the scope they filter by is read ahead from the map's bytes."""
    # The collector paused meanwhile: the map's objects and the per-node states are acyclic, and
    # the full collections that their numbers set off (two, 0.23 s of CPU in a 10,000-path map's
    # 1,000,000-record verify; the workers forked in here inherit the pause) freed about 300
    # objects of the run.
    with gc_paused():
        return _verify_map_files(map_path, paths, options, trust_root)


def _verify_map_files(
    map_path: str | Path,
    paths: Sequence[str | Path],
    options: VerifyOptions | None,
    trust_root: TrustRoot | None,
) -> tuple[LoadedFunctionMap, VerificationResult]:
    options = options or VerifyOptions()
    raw = read_bytes(map_path)
    workers = options.workers if options.workers is not None else (os.cpu_count() or 1)
    units = _parallel_units(paths, workers)
    try:
        scope = _scope_hint(raw) if units is not None else None
    except _NoHint:
        units = None
    if units is None:
        loaded = parse_function_map(raw, map_path, trust_root)
        return loaded, verify_files(loaded, paths, options)
    window_from, window_to = options.window_strings()
    running = _RunningScan(units, workers, (None, window_from, window_to, scope))
    try:
        loaded = parse_function_map(raw, map_path, trust_root)
    except BaseException:
        running.cancel()
        raise
    if loaded.function_map.scope != scope:  # a map that loads reads the same both ways
        running.cancel()
        return loaded, verify_files(loaded, paths, options)
    aggregator = new_aggregator(loaded, options)
    running.fold(aggregator, routed=True)
    return loaded, evaluate(loaded, aggregator, options)


# --- evaluation -----------------------------------------------------------------------------------


def _node_confidence(state: NodeAggregate | None, weights: Mapping[str, float]) -> float:
    if state is None or not state.count:
        return 0.0
    return max(weights[p] for p in state.probe_types())


class _NodeWeights:
    """`_node_confidence` of nodes, and the same rounded as a report carries it, worked out
    once per set of probe types (a map's nodes share a handful of them)."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = weights
        # By probe mask, -1 for a node not observed: (confidence, rounded, the probe types).
        self.by_mask: dict[int, tuple[float, float, tuple[str, ...]]] = {}

    def of(self, state: NodeAggregate) -> tuple[float, float, tuple[str, ...]]:
        mask = state.probe_mask if state.count else -1
        known = self.by_mask.get(mask)
        if known is None:
            weight = _node_confidence(state, self.weights)
            types = probe_types_of(state.probe_mask) if mask >= 0 else ()
            known = self.by_mask[mask] = (weight, _round(weight), types)
        return known


def _node_entry(
    node: ExpectedNode, state: NodeAggregate, weight: float, types: tuple[str, ...]
) -> dict[str, Any]:
    """A node's entry of the breakdown: `ExpectedNode.to_dict` and what was observed of it.
    `weight`: the node's confidence, rounded as the report carries it; `types`: the probe
    types that observed it."""
    count = state.count
    # The common node (no binary, build id or probe types) written out here: its entry as one
    # literal cost a third of the general way (the node's dict, then one key at a time), and
    # the entries are most of an API verification's evaluation.
    plain = node.binary_path is None and node.build_id is None and node.probe_types is None
    if count > 0:
        # Hits summed over aggregated records can pass what a report carries: saturated.
        if count > MAX_SAFE_INTEGER:
            count = MAX_SAFE_INTEGER
        if plain:
            return {
                "purl": node.purl,
                "symbol": node.symbol,
                "node_hash": node.node_hash,
                "observed": True,
                "count": count,
                "first_observed_at": state.first,
                "last_observed_at": state.last,
                "observed_probe_types": list(types),
                "confidence": weight,
            }
        entry = node.to_dict()
        entry["observed"] = True
        entry["count"] = count
        entry["first_observed_at"] = state.first
        entry["last_observed_at"] = state.last
        entry["observed_probe_types"] = list(types)
    elif plain:
        return {
            "purl": node.purl,
            "symbol": node.symbol,
            "node_hash": node.node_hash,
            "observed": False,
            "confidence": weight,
        }
    else:
        entry = node.to_dict()
        entry["observed"] = False
    entry["confidence"] = weight
    return entry


@functools.lru_cache(maxsize=4096)
def _versionless(purl: str) -> str:
    parsed = PackageURL.from_string(purl)
    return str(
        PackageURL(type=parsed.type, namespace=parsed.namespace, name=parsed.name).to_string()
    )


def _diagnose(
    missing: Mapping[str, tuple[ExpectedNode, list[str]]],
    unexpected: Mapping[str, NodeAggregate],
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Explain missing nodes by unexpected observations of the same function under another
    version of the package (version drift) or another spelling of the symbol (normalisation)."""
    exact: dict[tuple[str, str], ExpectedNode] = {}
    loose: dict[tuple[str, str], list[ExpectedNode]] = {}
    for node, _ in missing.values():
        exact[(node.purl, node.symbol)] = node
        loose.setdefault((_versionless(node.purl), node.symbol), []).append(node)
    diagnoses: list[dict[str, Any]] = []
    by_node: dict[str, list[dict[str, Any]]] = {}
    if not missing:
        return diagnoses, by_node
    for observed_hash, state in sorted(unexpected.items()):
        if not state.purl or not state.function_name:
            continue
        try:
            purl = canonical_purl(state.purl)
            loose_purl = _versionless(purl)
        except (StellaError, ValueError):
            continue
        symbol = normalize_symbol(state.function_name)
        found: list[tuple[str, ExpectedNode]] = []
        exact_node = exact.get((purl, symbol))
        if exact_node is not None:
            found.append((NORMALISATION_MISMATCH, exact_node))
        else:
            for candidate in loose.get((loose_purl, symbol), []):
                found.append((VERSION_DRIFT, candidate))
        for kind, node in found:
            if kind == VERSION_DRIFT:
                detail = f"observed {purl}, the map expects {node.purl}"
            else:
                detail = (
                    f"observed function_name {state.function_name!r} with node_hash "
                    f"{observed_hash}; normalised it is {symbol!r} = {node.node_hash}"
                )
            diagnosis = {
                "diagnosis": kind,
                "detail": detail,
                "expected": {"purl": node.purl, "symbol": node.symbol, "node_hash": node.node_hash},
                "observed": {
                    "purl": state.purl,
                    "function_name": state.function_name,
                    "node_hash": observed_hash,
                    "count": saturating_sum(state.count),
                },
                "path_ids": sorted(missing[node.node_hash][1]),
            }
            diagnoses.append(diagnosis)
            by_node.setdefault(node.node_hash, []).append(diagnosis)
    return diagnoses, by_node


def scope_section(scope: Scope | None, aggregator: ObservationAggregator) -> dict[str, Any]:
    """What the report says about the workload: the scope, records counted and not, and a
    finding for records of other processes (never dropped silently)."""
    out_of_scope = aggregator.out_of_scope
    section: dict[str, Any] = {
        "declared": scope.to_dict() if scope is not None else None,
        "records_in_scope": aggregator.records - out_of_scope,
        "records_out_of_scope": out_of_scope,
        "findings": [],
    }
    if scope is not None and out_of_scope:
        section["findings"].append(
            f"{out_of_scope} record(s) came from processes outside the scope "
            f"({scope.describe()}): reported, not counted"
        )
    return section


def _path_status(observed_nodes: int, total: int) -> str:
    if observed_nodes == total:
        return STATUS_OBSERVED
    return STATUS_PARTIAL if observed_nodes else STATUS_MISSING


def _tag_counts() -> dict[str, Any]:
    """A tag's paths by outcome, before any is counted."""
    return {
        "required_paths": 0,
        "observed_paths": 0,
        "partial_paths": 0,
        "missing_paths": 0,
        "optional_paths": 0,
        "optional_observed_paths": 0,
    }


class _PathTally:
    """Each path's entry of the breakdown, counted into its tag and the required totals; the
    nodes of required paths not observed (with the paths that needed them)."""

    def __init__(self, states: Mapping[str, NodeAggregate], weights: Mapping[str, float]) -> None:
        self.states = states
        self.node_weights = _NodeWeights(weights)
        self.breakdown: list[dict[str, Any]] = []
        self.tags: dict[str, dict[str, Any]] = {}
        self.missing: dict[str, tuple[ExpectedNode, list[str]]] = {}
        self.required_paths = self.observed_required = 0
        self.confidence_sum = 0.0
        self.path_confidence: dict[str, float] = {}

    def add(self, paths: Iterable[ExpectedPath]) -> None:
        # One loop with its names local: per path it is most of an API verification's
        # evaluation (a 100-path map, 1,000 records).
        states, weight_of = self.states, self.node_weights.of
        by_mask = self.node_weights.by_mask
        breakdown, tags, path_confidence = self.breakdown, self.tags, self.path_confidence
        required_paths = observed_required = 0
        confidence_sum = 0.0
        for path in paths:
            nodes = path.nodes
            total = len(nodes)
            if total == 1:  # most paths: no sums, and the path's confidence is its node's
                node = nodes[0]
                state = states[node.node_hash]
                seen = state.count > 0
                confidence, rounded, types = by_mask.get(
                    state.probe_mask if seen else -1
                ) or weight_of(state)
                entries = [_node_entry(node, state, rounded, types)]
                observed_nodes = 1 if seen else 0
                status = STATUS_OBSERVED if seen else STATUS_MISSING
            else:
                node_states = [states[n.node_hash] for n in nodes]
                pairs = [weight_of(state) for state in node_states]
                observed_nodes = sum(1 for state in node_states if state.count > 0)
                confidence = sum([pair[0] for pair in pairs]) / total
                rounded = _round(confidence)
                entries = [
                    _node_entry(n, state, pair[1], pair[2])
                    for n, state, pair in zip(nodes, node_states, pairs, strict=True)
                ]
                status = _path_status(observed_nodes, total)
            path_id = path.path_id
            path_confidence[path_id] = rounded
            breakdown.append(
                {
                    "path_id": path_id,
                    "tag": path.tag,
                    "priority": path.priority,
                    "optional": path.optional,
                    "status": status,
                    "observed_nodes": observed_nodes,
                    "total_nodes": total,
                    "confidence": rounded,
                    "nodes": entries,
                }
            )
            tag = tags.get(path.tag)
            if tag is None:
                tag = tags[path.tag] = _tag_counts()
            if path.optional:
                tag["optional_paths"] += 1
                tag["optional_observed_paths"] += status == STATUS_OBSERVED
                continue
            required_paths += 1
            confidence_sum += confidence
            tag["required_paths"] += 1
            if status == STATUS_OBSERVED:
                observed_required += 1
                tag["observed_paths"] += 1
                continue
            tag["partial_paths" if status == STATUS_PARTIAL else "missing_paths"] += 1
            for node in nodes:
                if not states[node.node_hash].count:
                    self.missing.setdefault(node.node_hash, (node, []))[1].append(path_id)
        self.required_paths += required_paths
        self.observed_required += observed_required
        self.confidence_sum += confidence_sum


def _judge_tags(tags: dict[str, dict[str, Any]], minimums: Mapping[str, float]) -> list[str]:
    """Each tag's rate and verdict against its minimum (a tag with a minimum and no path is
    added, met); the failures, one sentence each."""
    failures = []
    for name, tag in sorted(tags.items()):
        rate = tag["observed_paths"] / tag["required_paths"] if tag["required_paths"] else 1.0
        minimum = minimums.get(name)
        tag["observation_rate"] = _round(rate)
        if minimum is not None:
            tag["target_rate"] = minimum
        tag["verified"] = minimum is None or rate >= minimum
        if not tag["verified"]:
            failures.append(f"tag {name}: rate {rate:.4f} is below its minimum {minimum:.4f}")
    for name in sorted(set(minimums) - set(tags)):
        tags[name] = {
            **_tag_counts(),
            "observation_rate": 1.0,
            "target_rate": minimums[name],
            "verified": True,
        }
    return failures


def _missing_symbols(
    missing: Mapping[str, tuple[ExpectedNode, list[str]]],
    diagnosis_by_node: Mapping[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    entries = []
    for node_hash, (node, path_ids) in sorted(
        missing.items(), key=lambda item: (item[1][0].purl, item[1][0].symbol)
    ):
        entry = node.to_dict()
        entry["path_ids"] = sorted(path_ids)
        entry["reason"] = (
            " / ".join(sorted({d["diagnosis"] for d in diagnosis_by_node[node_hash]}))
            if node_hash in diagnosis_by_node
            else "not observed"
        )
        entries.append(entry)
    return entries


def _unexpected_symbols(
    unexpected: Mapping[str, NodeAggregate], diagnosed_hashes: Mapping[str, str]
) -> list[dict[str, Any]]:
    entries = []
    for node_hash, state in sorted(unexpected.items(), key=lambda item: (-item[1].count, item[0])):
        entry = {
            "node_hash": node_hash,
            "function_name": state.function_name,
            "purl": state.purl,
            "count": saturating_sum(state.count),
            "first_observed_at": state.first,
            "last_observed_at": state.last,
            "probe_types": state.probe_types(),
        }
        if node_hash in diagnosed_hashes:
            entry["diagnosis"] = diagnosed_hashes[node_hash]
        entries.append(entry)
    return entries


def evaluate(
    function_map: FunctionMap | LoadedFunctionMap,
    aggregator: ObservationAggregator,
    options: VerifyOptions | None = None,
) -> VerificationResult:
    """Turn aggregated per-node state into the verdict."""
    options = options or VerifyOptions()
    fmap, map_info = _unwrap(function_map)
    weights = options.probe_weights
    coverage = fmap.coverage
    fail_on_unexpected = (
        coverage.fail_on_unexpected
        if options.fail_on_unexpected is None
        else options.fail_on_unexpected
    )
    states = aggregator.expected
    tally = _PathTally(states, weights)
    tally.add(fmap.expected_paths)
    required_paths, observed_required = tally.required_paths, tally.observed_required
    tags = tally.tags

    observation_rate = observed_required / required_paths if required_paths else 1.0
    target = coverage.min_observation_rate
    failures: list[str] = []
    if observation_rate < target:
        failures.append(
            f"observation rate {observation_rate:.4f} is below the target {target:.4f} "
            f"({observed_required} of {required_paths} required paths observed)"
        )
    failures += _judge_tags(tags, coverage.tag_min_rates)

    diagnoses, diagnosis_by_node = _diagnose(tally.missing, aggregator.unexpected)
    missing_symbols = _missing_symbols(tally.missing, diagnosis_by_node)
    diagnosed_hashes = {d["observed"]["node_hash"]: d["diagnosis"] for d in diagnoses}
    unexpected_symbols = _unexpected_symbols(aggregator.unexpected, diagnosed_hashes)
    if unexpected_symbols and fail_on_unexpected:
        failures.append(
            f"{len(unexpected_symbols)} unexpected symbol(s) observed and fail_on_unexpected is true"
        )

    # Nodes by set of probe types first (a handful of sets), then each set's types counted.
    by_mask: dict[int, int] = {}
    observed_nodes = 0
    for state in states.values():
        mask = state.probe_mask
        by_mask[mask] = by_mask.get(mask, 0) + 1
        if state.count:
            observed_nodes += 1
    by_probe: dict[str, int] = {}
    for mask, nodes in by_mask.items():
        for probe in probe_types_of(mask):
            by_probe[probe] = by_probe.get(probe, 0) + nodes
    overall = tally.confidence_sum / required_paths if required_paths else 0.0
    window_from, window_to = options.window_strings()
    return VerificationResult(
        verified=not failures,
        observation_rate=_round(observation_rate),
        target_rate=target,
        per_path_breakdown=tally.breakdown,
        per_tag=dict(sorted(tags.items())),
        unexpected_symbols=unexpected_symbols,
        missing_symbols=missing_symbols,
        confidence={
            "overall": _round(overall),
            "method": "node: highest weight among the probe types that observed it (0 if "
            "unobserved); path: mean of its nodes; overall: mean over required paths",
            "weights": dict(sorted(weights.items())),
            "observed_nodes_by_probe_type": dict(sorted(by_probe.items())),
            "per_path": tally.path_confidence,
        },
        diagnoses=diagnoses,
        window={"from": window_from, "to": window_to},
        records={
            "read": aggregator.records,
            "in_window": aggregator.records - aggregator.outside_window - aggregator.out_of_scope,
            "outside_window": aggregator.outside_window,
            "out_of_scope": aggregator.out_of_scope,
            "expected_nodes": len(states),
            "expected_nodes_observed": observed_nodes,
            "unexpected_nodes": len(aggregator.unexpected),
        },
        failures=failures,
        fail_on_unexpected=fail_on_unexpected,
        service=fmap.service,
        function_map=map_info,
        scope=scope_section(fmap.scope, aggregator),
        warnings=[] if fmap.scope is not None else [NO_SCOPE_WARNING],
    )
