"""`runtime_agent:` of stellaops.yaml: every product-document setting honoured (mapped onto the
collector's options) or refused with one line naming the file and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.agent.config import load_agent_settings
from stella_bundle.cli import main as cli_main
from stella_bundle.collector.trial import ATTACH_TYPES
from stella_bundle.errors import ConfigError

RUNBOOK = """
runtime_agent:
  function_map: /etc/stella/maps/function-map.dsse.json
  trust_root: /etc/stella/maps/trust-root.json
  metrics:
    listen: "0.0.0.0:9464"
    verify_every_seconds: 30
    stall_seconds: 45
  probes:
    max_concurrent: 256
    attach_timeout_ms: 5000
    health_check_interval_ms: 5000
    default_types: ["uprobe", "kprobe"]
    sampling_rate: 0.5
  export:
    format: "ndjson"
    flush_interval_ms: 5000
    output_path: "/var/stella/observations/"
    aggregation_window_ms: 1000
signals:
  signing:
    key_file: /etc/stella/keys/collector.key
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stellaops.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_runbooks_settings_are_honoured(tmp_path: Path) -> None:
    path = write(tmp_path, RUNBOOK)
    settings = load_agent_settings(path)
    start = settings.start
    assert start.function_map == Path("/etc/stella/maps/function-map.dsse.json")
    assert start.trust_root == Path("/etc/stella/maps/trust-root.json")
    assert start.config == path  # signals: (key, rotation, mode) read by the collector
    assert start.target == Path("/var/stella/observations/")
    assert start.max_probes == 256
    assert start.attach_timeout_ms == 5000
    assert start.health_check_seconds == 5.0
    assert start.sampling_rate == 0.5
    assert start.flush_interval_seconds == 5.0
    assert start.aggregation_window == "1000ms"
    # uprobe (with its bulk link, uprobe_multi) and kprobe: every other attach type is off.
    assert start.disabled_attach_types == frozenset(ATTACH_TYPES) - {
        "uprobe",
        "uprobe_multi",
        "kprobe",
    }
    assert settings.metrics_listen == "0.0.0.0:9464"
    assert settings.verify_every_seconds == 30
    assert settings.stall_seconds == 45


def test_a_directory_of_maps(tmp_path: Path) -> None:
    settings = load_agent_settings(
        write(
            tmp_path,
            "runtime_agent:\n  function_maps: {directory: /etc/stella/maps, poll_seconds: 0.5}\n"
            "  trust_root: /etc/stella/trust-root.json\n",
        )
    )
    assert settings.maps is not None
    assert settings.maps.directory == Path("/etc/stella/maps")
    assert settings.maps.poll_seconds == 0.5
    assert settings.start.trust_root == Path("/etc/stella/trust-root.json")
    default = load_agent_settings(
        write(tmp_path, "runtime_agent:\n  function_maps: {directory: m}\n  trust_root: t\n")
    )
    assert default.maps is not None and default.maps.poll_seconds == 2.0
    assert load_agent_settings(write(tmp_path, "runtime_agent:\n  function_map: f\n")).maps is None


def test_defaults_when_only_the_map_is_named(tmp_path: Path) -> None:
    settings = load_agent_settings(write(tmp_path, "runtime_agent:\n  function_map: fm.json\n"))
    assert settings.metrics_listen == "127.0.0.1:9464"
    assert settings.stall_seconds == 30.0
    assert settings.start.disabled_attach_types is None  # STELLA_PROBES_DISABLE decides
    assert settings.start.max_probes is None
    assert settings.start.config is None  # no signals: section to read


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (
            "runtime_agent:\n  function_map: f\n  observation_store:\n    type: memory\n",
            "runtime_agent.observation_store",
            "stella observations ingest",
        ),
        (
            "runtime_agent:\n  function_maps: /etc/stella/maps/\n  trust_root: t\n",
            "runtime_agent.function_maps",
            "expected a mapping",
        ),
        (
            "runtime_agent:\n  function_maps: {poll_seconds: 1}\n  trust_root: t\n",
            "runtime_agent.function_maps.directory",
            "directory of signed function maps is required",
        ),
        (
            "runtime_agent:\n  function_maps: {directory: m}\n",
            "runtime_agent.trust_root",
            "verifies each map's signature",
        ),
        (
            "runtime_agent:\n  function_map: f\n  function_maps: {directory: m}\n  trust_root: t\n",
            "runtime_agent.function_map",
            "not both",
        ),
        (
            "runtime_agent:\n  function_maps: {directory: m, poll_seconds: 0}\n  trust_root: t\n",
            "runtime_agent.function_maps.poll_seconds",
            "positive number",
        ),
        (
            "runtime_agent:\n  function_maps: {directory: m, inotify: true}\n  trust_root: t\n",
            "runtime_agent.function_maps.inotify",
            "unknown key",
        ),
        (
            "runtime_agent:\n  function_maps: {directory: m}\n  trust_root: t\n"
            "signals:\n  chain_id: one\n",
            "signals.chain_id",
            "one chain per map and host",
        ),
        (
            "runtime_agent:\n  function_map: f\n  export:\n    format: json\n",
            "runtime_agent.export.format",
            "only ndjson",
        ),
        (
            "runtime_agent:\n  function_map: f\n  probes:\n    default_types: [uprobe, ebpf]\n",
            "runtime_agent.probes.default_types",
            "unknown attach type 'ebpf'",
        ),
        (
            "runtime_agent:\n  function_map: f\n  probes:\n    max_concurrent: 0\n",
            "runtime_agent.probes.max_concurrent",
            "positive integer",
        ),
        (
            "runtime_agent:\n  function_map: f\n  probes:\n    health_check_interval_ms: 0.5\n",
            "runtime_agent.probes.health_check_interval_ms",
            "positive integer",
        ),
        (
            "runtime_agent:\n  function_map: f\n  probes:\n    sampling_rate: 2\n",
            "runtime_agent.probes.sampling_rate",
            "at most 1.0",
        ),
        (
            "runtime_agent:\n  function_map: f\n  probes:\n    aggregation_window_ms: 5\n",
            "runtime_agent.probes.aggregation_window_ms",
            "unknown key",
        ),
        (
            "runtime_agent:\n  function_map: f\n  metrics:\n    stall_seconds: 0\n",
            "runtime_agent.metrics.stall_seconds",
            "positive number",
        ),
        (
            "runtime_agent:\n  function_map: f\n  metrics:\n    listen: localhost:9464\n",
            "runtime_agent.metrics.listen",
            "IP address",
        ),
        ("runtime_agent:\n  probes: {}\n", "runtime_agent.function_map", "required"),
        ("signals: {}\n", "runtime_agent", "no 'runtime_agent' section"),
        (
            "runtime_agent:\n  function_map: f\n  export:\n    output_path: /a\n"
            "signals:\n  output_directory: /b\n",
            "runtime_agent.export.output_path",
            "one value, in one place",
        ),
    ],
)
def test_refused_with_the_key_named(tmp_path: Path, text: str, field: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_agent_settings(path)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value.path) == str(path)


def test_the_cli_refuses_with_exit_2_and_one_line(tmp_path: Path, capfd: Any) -> None:
    path = write(tmp_path, "runtime_agent:\n  function_map: f\n  observation_store: {}\n")
    assert cli_main(["agent", "run", "--config", str(path)]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(path) in err[0] and "runtime_agent.observation_store" in err[0]


def test_a_bad_listen_override_is_refused_before_anything_runs(tmp_path: Path, capfd: Any) -> None:
    path = write(tmp_path, "runtime_agent:\n  function_map: missing.json\n")
    code = cli_main(["agent", "run", "--config", str(path), "--metrics-listen", "localhost:1"])
    assert code == 2
    err = capfd.readouterr().err
    assert "--metrics-listen" in err and "missing.json" not in err


def test_the_stall_time_is_ten_windows_and_at_least_the_setting() -> None:
    from types import SimpleNamespace

    from stella_bundle.agent.instrument import stall_seconds

    config = SimpleNamespace(aggregation_ms=200)
    session: Any = SimpleNamespace(collector=SimpleNamespace(config=config))
    assert stall_seconds(session) == 30.0  # metrics.stall_seconds unset
    assert stall_seconds(session, 8.0) == 8.0
    config.aggregation_ms = 10_000
    assert stall_seconds(session, 8.0) == 100.0  # ten windows of 10 s


@pytest.mark.parametrize("listen", [None, "127.0.0.1:0"], ids=["no-listener", "listener"])
def test_the_map_supervisors_stall_time_is_the_same_rule_with_or_without_a_listener(
    tmp_path: Path, test_keys: Any, listen: str | None
) -> None:
    """The systemd watchdog's stall time of `function_maps:` follows each map's aggregation
    window (ten of them) whether or not /healthz is served: without a listener it stayed at
    `stall_seconds`, and a map aggregating every 10 s (one turn each) would have starved the
    watchdog of a healthy agent after 30 s."""
    from types import SimpleNamespace

    from stella_bundle.agent.supervisor import MapSupervisor

    maps = tmp_path / "maps"
    maps.mkdir()
    settings = load_agent_settings(
        write(
            tmp_path,
            f"""
            runtime_agent:
              function_maps: {{directory: {maps}}}
              trust_root: {test_keys.trust_root}
            """,
        )
    )
    supervisor = MapSupervisor(settings, listen)
    assert supervisor._stall_limit() == 30.0
    session: Any = SimpleNamespace(
        collector=SimpleNamespace(config=SimpleNamespace(aggregation_ms=10_000))
    )
    supervisor._allow_stall_of(session)
    assert supervisor._stall_limit() == 100.0
    if supervisor.endpoint is not None:
        assert supervisor.endpoint.health.stall_seconds == 100.0
