"""The alert rules: valid for Prometheus, unit-tested by promtool (a firing and a silent case for
every alert), built only on metrics the agent exposes with the type the rule assumes, and the
same groups in the Kubernetes PrometheusRule."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stella_bundle.agent.metrics import CATALOGUE_BY_NAME, AgentMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "stella-rules.yml"
RULE_TESTS = ROOT / "tests" / "deploy" / "stella-rules.test.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
IN_CI = bool(os.environ.get("CI"))

COUNTER_FUNCTIONS = ("rate", "irate", "increase", "resets")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is missing (Debian package prometheus; scripts/setup.sh installs it)"
        if IN_CI:
            pytest.fail(message)  # CI must prove the rules, not skip them
        pytest.skip(message)
    return path


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names == {
        "StellaCoverageLow",
        "StellaCoverageCritical",
        "StellaUnexpectedSymbols",
        "StellaProbeAttachFailures",
        "StellaProbeLinksLost",
        "StellaObservationBufferFull",
        "StellaRingBufferDropping",
        "StellaSealOverdue",
        "StellaFunctionMapRefused",
        "StellaAgentDown",
        "StellaAgentAbsent",
    }
    assert names - firing == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


def test_the_thresholds_are_the_runbooks() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    assert by_name["StellaCoverageLow"]["expr"] == "stella_observation_rate < 0.80"
    assert by_name["StellaCoverageLow"]["labels"]["severity"] == "warning"
    assert by_name["StellaCoverageCritical"]["expr"] == "stella_observation_rate < 0.50"
    assert by_name["StellaCoverageCritical"]["labels"]["severity"] == "critical"
    assert by_name["StellaUnexpectedSymbols"]["expr"] == "stella_unexpected_symbols > 0"
    assert by_name["StellaProbeAttachFailures"]["expr"].endswith("> 0.05")
    assert by_name["StellaObservationBufferFull"]["labels"]["severity"] == "critical"
    assert "2 * stella_chunk_max_age_seconds" in by_name["StellaSealOverdue"]["expr"]


def test_rules_use_only_exposed_metrics_of_the_right_type() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    metrics = AgentMetrics()
    chain = metrics.chain("c", "s")
    chain.sealed(1, 1.0)
    chain.coverage(1.0, 0)
    metrics.oldest_unsealed.labels(chain="c", service="s").set(1.0)
    metrics.map_refused.labels(function_map="m.dsse.json").set(1)
    exposed = {
        sample.name: family.type
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
    used: set[str] = set()
    for rule in alerts():
        expr = rule["expr"]
        names = set(re.findall(r"\bstella_[a-z_]+\b", expr))
        used |= names
        inside_counter_functions = set(
            re.findall(rf"\b(?:{'|'.join(COUNTER_FUNCTIONS)})\(\s*(stella_[a-z_]+)", expr)
        )
        for name in names:
            spec = CATALOGUE_BY_NAME.get(name)
            assert spec is not None, f"{rule['alert']}: {name} is not in agent/metrics.py"
            assert exposed.get(name) == spec.type, f"{name} exposed as {exposed.get(name)}"
            if name in inside_counter_functions:
                assert spec.type == "counter", f"{rule['alert']}: rate/increase of gauge {name}"
    # Every metric the runbook's table needs is used by some rule.
    assert {
        "stella_observation_rate",
        "stella_unexpected_symbols",
        "stella_probe_attach_failures_total",
        "stella_observation_buffer_full_total",
    } <= used


def test_the_prometheusrule_carries_the_same_groups() -> None:
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "run python3 scripts/render_prometheusrule.py"
    )


ALERTMANAGER = ROOT / "deploy" / "prometheus" / "alertmanager-stella.yml"


@pytest.fixture(scope="module")
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        message = "amtool is missing (Debian package prometheus-alertmanager; scripts/setup.sh)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_alertmanager_accepts_the_routing(amtool: str) -> None:
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=StellaUnexpectedSymbols", "severity=info"], "stella-security"),
        (["alertname=StellaCoverageCritical", "severity=critical"], "stella-oncall"),
        (["alertname=StellaAgentAbsent", "job=stella-agent"], "stella-oncall"),
    ],
)
def test_alerts_are_routed_to_their_receiver(amtool: str, labels: list[str], receiver: str) -> None:
    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]


def test_inhibitions_name_real_alerts_and_labels_they_carry() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    config = yaml.safe_load(ALERTMANAGER.read_text())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            match = re.fullmatch(r'alertname(=|=~|!=)"(.+)"', matcher)
            assert match, matcher
            if match.group(1) != "=~":
                assert match.group(2) in by_name, matcher
        # `equal` labels must be on both alerts or the inhibition never applies: chain comes
        # from the stella_* series, instance from the scrape; `up` has no chain.
        source = re.search(r'"(\w+)"', rule["source_matchers"][0])
        assert source is not None
        expr = by_name[source.group(1)]["expr"]
        if "chain" in rule["equal"]:
            assert "stella_" in expr, rule


def test_the_scrape_config_loads_the_rules_under_the_job_they_select(promtool: str) -> None:
    config = ROOT / "deploy" / "prometheus" / "prometheus-stella.yml"
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout  # the rule file resolved
    jobs = [job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]]
    assert jobs == ["stella-agent"]
    for rule in alerts():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, rule["alert"]
