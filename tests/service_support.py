"""Helpers for tests and benchmarks that run a service (the agent, nginx, a store's API).

A free loopback port, a plain HTTP GET, a Prometheus scrape, waiting on a condition, and an
unsigned function-map statement file for a list of nodes. Shared by tests/ and bench/ (which
put tests/ on sys.path) so a benchmark sets up what a test proves.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.formats.function_map import ExpectedNode

Scrape = dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path; (0, "") while nothing listens. A
    listener that is there may answer slowly on a loaded machine: 30 s before giving up."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening (yet)


def scrape(port: int) -> Scrape:
    """sample name → (family type, labels → value), as Prometheus would ingest it."""
    status, text = http_get(port, "/metrics")
    assert status == 200, f"/metrics answered {status}"
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            _, values = out.setdefault(sample.name, (family.type, {}))
            values[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """The first truthy value of `condition()`, polled every 0.2 s; AssertionError naming
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def function_map_file(
    path: Path,
    nodes: list[ExpectedNode],
    service: str = "stella-workload",
    optional: int = 0,
    window_seconds: int = 5,
    scope: dict[str, Any] | None = None,
) -> Path:
    """An unsigned function-map statement: one required path per node, the last `optional`
    nodes' paths optional; written to `path`, which is returned."""
    predicate: dict[str, Any] = {
        "service": service,
        "build_id": "test",
        "generated_at": "2026-01-01T00:00:00.000000Z",
        "sbom": {"digest": "sha256:" + "0" * 64, "format": "CycloneDX", "spec_version": "1.6"},
        "coverage": {
            "min_observation_rate": 0.95,
            "window_seconds": window_seconds,
            "fail_on_unexpected": True,
            "tag_min_rates": {},
        },
        "hot_functions": [],
        "expected_paths": [
            {"path_id": f"p{i}", "tag": "general", "priority": 1,
             "optional": i >= len(nodes) - optional, "nodes": [node.to_dict()]}
            for i, node in enumerate(nodes)
        ],
    }  # fmt: skip
    if scope is not None:
        predicate["scope"] = scope
    statement = make_statement(
        [{"name": "sbom.json", "digest": {"sha256": "0" * 64}}], FUNCTION_MAP_PREDICATE, predicate
    )
    path.write_text(json.dumps(statement))
    return path


def wait_ready(port: int, process: Any, timeout: float = 60) -> None:
    """Until GET /readyz answers 200 or `process` (a Popen) exits: the caller checks which."""
    wait_for(
        lambda: http_get(port, "/readyz")[0] == 200 or process.poll() is not None, timeout, "ready"
    )
