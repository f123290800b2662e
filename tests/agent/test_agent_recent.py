"""The periodic verification behind stella_observation_rate: the verifier's rule over the last
two coverage windows, from one remembered record per node and probe type."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from stella_bundle.agent.recent import RecentObservations
from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.coverage import verify_observations
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.timeutil import format_timestamp

PURL = "pkg:generic/app@1.0.0"
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


def _map(tmp_path: Path, nodes: list[ExpectedNode], window_seconds: int) -> Any:
    predicate = {
        "service": "app",
        "build_id": "test",
        "generated_at": "2026-01-01T00:00:00.000000Z",
        "sbom": {"digest": "sha256:" + "0" * 64, "format": "CycloneDX", "spec_version": "1.6"},
        "coverage": {"min_observation_rate": 0.95, "window_seconds": window_seconds,
                     "fail_on_unexpected": True, "tag_min_rates": {}},
        "hot_functions": [],
        "expected_paths": [
            {"path_id": f"p{i}", "tag": "general", "priority": 1, "optional": False,
             "nodes": [node.to_dict()]}
            for i, node in enumerate(nodes)
        ],
    }  # fmt: skip
    statement = make_statement(
        [{"name": "sbom.json", "digest": {"sha256": "0" * 64}}], FUNCTION_MAP_PREDICATE, predicate
    )
    path = tmp_path / "fm.json"
    path.write_text(json.dumps(statement))
    return load_function_map(path)


def _record(node: ExpectedNode, seconds_ago: float) -> dict[str, Any]:
    return {
        "node_hash": node.node_hash,
        "function_name": node.symbol,
        "probe_type": "uprobe",
        "observed_at": format_timestamp(NOW - dt.timedelta(seconds=seconds_ago)),
        "purl": node.purl,
        "kind": "function",
        "pid": 42,
        "comm": "app",
        "host": "h",
        "binary_path": "/usr/bin/app",
    }


def test_the_rate_covers_two_windows_and_agrees_with_function_map_verify(tmp_path: Path) -> None:
    nodes = [ExpectedNode.create(PURL, f"f{i}", binary_path="/usr/bin/app") for i in range(4)]
    loaded = _map(tmp_path, nodes, window_seconds=600)
    recent = RecentObservations(loaded)
    assert recent.lookback == dt.timedelta(seconds=1200)
    records = [
        _record(nodes[0], 30),  # in the last window
        _record(nodes[1], 900),  # in the window before: still counted (the runbook's hour)
        _record(nodes[2], 1500),  # older than two windows: not counted
    ]
    for record in records:
        recent.remember(record)
    result = recent.verify(NOW)
    assert result.observation_rate == 0.5
    assert result.unexpected_symbols == []
    # The same answer as the verifier given every record and the same window.
    from stella_bundle.coverage import VerifyOptions

    direct = verify_observations(
        loaded, records, VerifyOptions(window_from=NOW - recent.lookback, window_to=NOW)
    )
    assert direct.observation_rate == result.observation_rate


def test_one_record_per_node_is_kept_the_latest(tmp_path: Path) -> None:
    node = ExpectedNode.create(PURL, "hot", binary_path="/usr/bin/app")
    recent = RecentObservations(_map(tmp_path, [node], window_seconds=60))
    for seconds_ago in range(10_000, 0, -1):  # a hot function, oldest first
        recent.remember(_record(node, seconds_ago))
    assert len(recent._latest) == 1  # memory: the map's size, not the traffic
    assert recent.verify(NOW).observation_rate == 1.0


def test_symbols_outside_the_map_are_unexpected(tmp_path: Path) -> None:
    known = ExpectedNode.create(PURL, "known", binary_path="/usr/bin/app")
    stranger = ExpectedNode.create(PURL, "stranger", binary_path="/usr/bin/app")
    recent = RecentObservations(_map(tmp_path, [known], window_seconds=60))
    recent.remember(_record(known, 1))
    recent.remember(_record(stranger, 1))
    result = recent.verify(NOW)
    assert result.observation_rate == 1.0
    assert [u["node_hash"] for u in result.unexpected_symbols] == [stranger.node_hash]
