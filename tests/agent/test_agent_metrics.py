"""The metric catalogue as exposed, the listener's address rules and health answers (no eBPF:
tests/collector/test_collector_metrics.py scrapes a real collection)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stella_bundle.agent.endpoint import HealthState, parse_listen
from stella_bundle.agent.metrics import CATALOGUE, AgentMetrics
from stella_bundle.errors import ConfigError


def exposed_types(metrics: AgentMetrics) -> dict[str, str]:
    """sample name → family type, as Prometheus ingests the exposition."""
    text = generate_latest(metrics.registry).decode()
    return {
        sample.name: family.type
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_catalogued_metric_is_exposed_with_its_type() -> None:
    metrics = AgentMetrics()
    chain = metrics.chain("api-host", "api")
    chain.sealed(1, 1_700_000_000.0)  # series that appear on events
    chain.coverage(0.5, 0)
    metrics.oldest_unsealed.labels(chain="api-host", service="api").set(1_700_000_000.0)
    metrics.map_refused.labels(function_map="api.dsse.json").set(1)
    exposed = exposed_types(metrics)
    for spec in CATALOGUE:
        assert exposed.get(spec.name) == spec.type, spec.name
        assert spec.name.startswith("stella_")
        assert spec.name.endswith("_total") == (spec.type == "counter")
    assert not [name for name in exposed if name.endswith("_created")]
    assert "process_resident_memory_bytes" in exposed


def test_no_rate_series_before_a_verification_said_something() -> None:
    metrics = AgentMetrics()
    chain = metrics.chain("api-host", "api")
    chain.coverage(None, 0)
    exposed = exposed_types(metrics)
    assert "stella_observation_rate" not in exposed  # a 0 here would page someone
    assert exposed["stella_unexpected_symbols"] == "gauge"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["9464", "localhost:9464", "127.0.0.1:", "127.0.0.1:70000", ":9464"]
)
def test_bad_listen_addresses_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(text)
    assert caught.value.field == "--metrics-listen"


def test_health_follows_the_loop_and_readiness_its_owner() -> None:
    now = [100.0]
    health = HealthState(30.0, clock=lambda: now[0])
    assert health.liveness() == (True, "ok")
    assert health.readiness() == (False, "probes not attached yet")
    health.ready()
    assert health.readiness() == (True, "ok")
    now[0] += 31
    alive, why = health.liveness()
    assert not alive and "stalled" in why
    health.heartbeat()
    assert health.liveness()[0]
    health.not_ready("stopping: final seal")
    assert health.readiness() == (False, "stopping: final seal")


def test_a_removed_chain_leaves_no_series_and_the_others_keep_theirs() -> None:
    """A map removed from the agent's directory: every series labelled with its chain goes
    (a stale rate would page, a stale unsealed time would say a seal is overdue)."""
    metrics = AgentMetrics()
    kept, gone = metrics.chain("api-host", "api"), metrics.chain("web-host", "web")
    for chain, labels in ((kept, ("api-host", "api")), (gone, ("web-host", "web"))):
        chain.sealed(1, 1_700_000_000.0)
        chain.coverage(0.5, 1)
        metrics.oldest_unsealed.labels(*labels).set(1_700_000_000.0)
    gone.remove()
    text = generate_latest(metrics.registry).decode()
    chains = {
        sample.labels.get("chain")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert chains == {None, "api-host"}  # None: process_* and other unlabelled series
    assert 'stella_probes_attached{chain="api-host",service="api"}' in text
