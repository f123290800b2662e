"""The report assembly as it was before the engine's evaluation was made faster (2026-12-03,
issue 11): the oracle of test_coverage_report_assembly.py. Only the parts that changed are
here (the node weights, the node entries, the path tally, `evaluate` itself); the helpers that
did not change are the engine's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from stella_bundle.canonical import MAX_SAFE_INTEGER
from stella_bundle.coverage.engine import (
    STATUS_OBSERVED,
    STATUS_PARTIAL,
    VerificationResult,
    VerifyOptions,
    _diagnose,
    _judge_tags,
    _missing_symbols,
    _node_confidence,
    _path_status,
    _round,
    _tag_counts,
    _unexpected_symbols,
    _unwrap,
    scope_section,
)
from stella_bundle.coverage.scan import NodeAggregate, ObservationAggregator, probe_types_of
from stella_bundle.formats.function_map import ExpectedNode, ExpectedPath, FunctionMap
from stella_bundle.formats.scope import NO_SCOPE_WARNING
from stella_bundle.functionmap.load import LoadedFunctionMap


def _node_weights(
    states: Mapping[str, NodeAggregate], weights: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """`_node_confidence` of every expected node, and the same rounded as a report carries
    it, worked out once per set of probe types (a map's nodes share a handful of them)."""
    by_mask: dict[int, tuple[float, float]] = {}
    exact: dict[str, float] = {}
    rounded: dict[str, float] = {}
    for node_hash, state in states.items():
        mask = state.probe_mask if state.count else -1
        pair = by_mask.get(mask)
        if pair is None:
            weight = _node_confidence(state, weights)
            pair = by_mask[mask] = (weight, _round(weight))
        exact[node_hash], rounded[node_hash] = pair
    return exact, rounded


def _node_entry(node: ExpectedNode, state: NodeAggregate, weight: float) -> dict[str, Any]:
    """`weight`: the node's confidence, rounded as the report carries it."""
    entry = node.to_dict()
    count = state.count
    entry["observed"] = count > 0
    if count > 0:
        # Hits summed over aggregated records can pass what a report carries: saturated.
        entry["count"] = count if count <= MAX_SAFE_INTEGER else MAX_SAFE_INTEGER
        entry["first_observed_at"] = state.first
        entry["last_observed_at"] = state.last
        entry["observed_probe_types"] = state.probe_types()
    entry["confidence"] = weight
    return entry


class _PathTally:
    """Each path's entry of the breakdown, counted into its tag and the required totals; the
    nodes of required paths not observed (with the paths that needed them)."""

    def __init__(
        self,
        states: Mapping[str, NodeAggregate],
        node_weight: Mapping[str, float],
        rounded_weight: Mapping[str, float],
    ) -> None:
        self.states = states
        self.node_weight = node_weight
        self.rounded_weight = rounded_weight
        self.breakdown: list[dict[str, Any]] = []
        self.tags: dict[str, dict[str, Any]] = {}
        self.missing: dict[str, tuple[ExpectedNode, list[str]]] = {}
        self.required_paths = self.observed_required = 0
        self.confidence_sum = 0.0
        self.path_confidence: dict[str, float] = {}

    def add(self, path: ExpectedPath) -> None:
        states, node_weight, rounded_weight = self.states, self.node_weight, self.rounded_weight
        nodes = path.nodes
        total = len(nodes)
        if total == 1:  # most paths: no sums, and the path's confidence is its node's
            node_hash = nodes[0].node_hash
            state = states[node_hash]
            seen = [state.count > 0]
            confidence, rounded = node_weight[node_hash], rounded_weight[node_hash]
            entries = [_node_entry(nodes[0], state, rounded)]
        else:
            seen = [states[n.node_hash].count > 0 for n in nodes]
            confidence = sum([node_weight[n.node_hash] for n in nodes]) / total
            rounded = _round(confidence)
            entries = [
                _node_entry(n, states[n.node_hash], rounded_weight[n.node_hash]) for n in nodes
            ]
        observed_nodes = seen.count(True)
        status = _path_status(observed_nodes, total)
        self.path_confidence[path.path_id] = rounded
        self.breakdown.append(
            {
                "path_id": path.path_id,
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
        tag = self.tags.get(path.tag)
        if tag is None:
            tag = self.tags[path.tag] = _tag_counts()
        if path.optional:
            tag["optional_paths"] += 1
            tag["optional_observed_paths"] += status == STATUS_OBSERVED
            return
        self.required_paths += 1
        self.confidence_sum += confidence
        tag["required_paths"] += 1
        if status == STATUS_OBSERVED:
            self.observed_required += 1
            tag["observed_paths"] += 1
            return
        tag["partial_paths" if status == STATUS_PARTIAL else "missing_paths"] += 1
        for node, was_seen in zip(nodes, seen, strict=True):
            if not was_seen:
                self.missing.setdefault(node.node_hash, (node, []))[1].append(path.path_id)


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
    tally = _PathTally(states, *_node_weights(states, weights))
    for path in fmap.expected_paths:
        tally.add(path)
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

    by_probe: dict[str, int] = {}
    # Nodes by set of probe types first (a handful of sets), then each set's types counted.
    for mask, nodes in Counter(state.probe_mask for state in states.values()).items():
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
            "expected_nodes_observed": sum(1 for s in states.values() if s.count),
            "unexpected_nodes": len(aggregator.unexpected),
        },
        failures=failures,
        fail_on_unexpected=fail_on_unexpected,
        service=fmap.service,
        function_map=map_info,
        scope=scope_section(fmap.scope, aggregator),
        warnings=[] if fmap.scope is not None else [NO_SCOPE_WARNING],
    )
