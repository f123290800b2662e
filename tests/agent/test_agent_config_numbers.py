"""Every number of stellaops.yaml (the agent's `runtime_agent:`, the writer's `signals:`, the
store's `observation_store:`) refuses what YAML can write that is no such number: NaN, the
infinities, zero or less, past what the clock or the calendar can hold, a boolean, a string.
Each is refused with the file and the dotted key, never an internal error later."""

from __future__ import annotations

from pathlib import Path

import pytest

from stella_bundle.agent.config import load_agent_settings
from stella_bundle.errors import ConfigError
from stella_bundle.evidence.config import load_signals_config
from stella_bundle.store.config import store_settings

NOT_NUMBERS = [".nan", ".inf", "-.inf", "-1", "0", "true", "'5'"]

AGENT_KEYS = [
    "metrics.verify_every_seconds",
    "metrics.stall_seconds",
    "probes.max_concurrent",
    "probes.attach_timeout_ms",
    "probes.health_check_interval_ms",
    "probes.sampling_rate",
    "export.flush_interval_ms",
    "export.aggregation_window_ms",
    "function_maps.poll_seconds",
]


def _agent_yaml(key: str, value: str) -> str:
    section, name = key.split(".")
    if section == "function_maps":
        return (
            f"runtime_agent:\n  trust_root: t.json\n  function_maps:\n    directory: m\n"
            f"    {name}: {value}\n"
        )
    return f"runtime_agent:\n  function_map: f.json\n  {section}:\n    {name}: {value}\n"


def _refused(path: Path, load: object, field: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(path)  # type: ignore[operator]
    assert caught.value.field == field, caught.value.describe()
    assert caught.value.path == str(path)
    assert "expected" in caught.value.message and "\n" not in caught.value.describe()
    return caught.value


@pytest.mark.parametrize("value", [*NOT_NUMBERS, "1e300"])
@pytest.mark.parametrize("key", AGENT_KEYS)
def test_agent_numbers(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(_agent_yaml(key, value))
    _refused(path, load_agent_settings, f"runtime_agent.{key}")


SIGNALS = {
    "rotation.max_age_seconds": "signals:\n  rotation:\n    max_age_seconds: {}\n",
    "rotation.max_age_minutes": "signals:\n  rotation:\n    max_age_minutes: {}\n",
    "rotation.max_size_mb": "signals:\n  rotation:\n    max_size_mb: {}\n",
    "flush_interval_ms": "signals:\n  flush_interval_ms: {}\n",
    "flush_interval_seconds": "signals:\n  flush_interval_seconds: {}\n",
}


SIGNALS_CASES = [
    (key, value)
    for key in SIGNALS
    for value in NOT_NUMBERS
    if not (key.startswith("flush") and value == "0")  # 0: flush on every append
]


@pytest.mark.parametrize(("key", "value"), SIGNALS_CASES)
def test_signals_numbers(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(SIGNALS[key].format(value))
    error = _refused(path, load_signals_config, f"signals.{key}")
    assert error.field is not None


STORE_CASES = [
    *[("retention_hours", value) for value in [*NOT_NUMBERS, "1e300", "876001"]],
    *[("max_batch_size", value) for value in [*NOT_NUMBERS, "1e300"]],
]


@pytest.mark.parametrize(("key", "value"), STORE_CASES)
def test_store_numbers(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(f"observation_store:\n  type: sqlite\n  path: s.sqlite\n  {key}: {value}\n")
    _refused(path, lambda p: store_settings(None, p), f"observation_store.{key}")


def test_the_largest_retention_still_prunes(tmp_path: Path) -> None:
    """At the bound the cutoff is still a date (a larger one failed with an internal error)."""
    import datetime as dt

    path = tmp_path / "stellaops.yaml"
    path.write_text("observation_store:\n  type: sqlite\n  retention_hours: 876000\n")
    settings = store_settings(None, path)
    assert dt.datetime.now(dt.UTC) - settings.retention > dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
