"""The `runtime_agent:` section of stellaops.yaml (the product documents' keys): each setting is
honoured or refused with a one-line error naming the file and the key.

    runtime_agent:
      function_map: /etc/stella/maps/function-map.dsse.json   # one map, or
      function_maps: {directory: /etc/stella/maps, poll_seconds: 2}   # every map in a directory
      trust_root: /etc/stella/maps/trust-root.json
      metrics: {listen: "127.0.0.1:9464", verify_every_seconds: 60, stall_seconds: 30}
      probes: {max_concurrent: 256, attach_timeout_ms: 5000,
               default_types: [uprobe, kprobe], sampling_rate: 1.0,
               health_check_interval_ms: 2000}
      export: {format: ndjson, flush_interval_ms: 5000,
               output_path: /var/lib/stella/evidence, aggregation_window_ms: 1000}

The signing key, rotation and collection mode stay in `signals:` (one definition, shared with
`signals start`); a setting given in both sections with two values is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..collector.run import StartOptions
from ..collector.trial import ATTACH_TYPES
from ..errors import ConfigError
from ..evidence.config import read_stellaops
from .endpoint import DEFAULT_LISTEN, parse_listen
from .instrument import DEFAULT_VERIFY_EVERY_SECONDS, STALL_MIN_SECONDS

SECTION: Final = "runtime_agent"
_TOP_KEYS: Final = {"function_map", "function_maps", "trust_root", "metrics", "probes", "export"}
_MAPS_KEYS: Final = {"directory", "poll_seconds"}
# The largest number a setting may be: a duration the clocks can wait (time.sleep refuses
# about 9.2e9 s), and far beyond any sensible count or interval.
MAX_SETTING: Final = 1_000_000_000
# How often the map directory is looked at: a map copied in is collected within this.
DEFAULT_POLL_SECONDS: Final = 2.0
_METRICS_KEYS: Final = {"listen", "verify_every_seconds", "stall_seconds"}
_PROBE_KEYS: Final = {
    "max_concurrent",
    "attach_timeout_ms",
    "default_types",
    "sampling_rate",
    "health_check_interval_ms",
}
_EXPORT_KEYS: Final = {"format", "flush_interval_ms", "output_path", "aggregation_window_ms"}

# Settings of the product documents this agent does not do, and what to do instead.
REFUSED: Final[dict[str, str]] = {
    "observation_store": (
        "the agent writes signed evidence chains (export.output_path); put them into a store "
        "with `stella observations ingest --store URL`, which verifies them first"
    ),
}
EXPORT_FORMATS: Final = ("ndjson",)
# Link mechanisms that belong to an attach type a user names (uprobe_multi is how uprobes
# attach in bulk): allowed whenever that type is.
_LINK_OF: Final = {"uprobe_multi": "uprobe"}


@dataclass(frozen=True)
class MapDirectorySetting:
    """`function_maps:`: every signed map in `directory`, looked at every `poll_seconds`."""

    directory: Path
    poll_seconds: float = DEFAULT_POLL_SECONDS


@dataclass(frozen=True)
class AgentSettings:
    # With `maps`, a template: its function_map is the directory, replaced per map.
    start: StartOptions
    metrics_listen: str = DEFAULT_LISTEN
    verify_every_seconds: float = DEFAULT_VERIFY_EVERY_SECONDS
    # The least stall time: /healthz and the watchdog fail once a loop has not turned for
    # max(stall_seconds, 10 aggregation windows).
    stall_seconds: float = STALL_MIN_SECONDS
    maps: MapDirectorySetting | None = None


class _Section:
    """One mapping of the file, with errors naming `runtime_agent.<path>.<key>`."""

    def __init__(self, data: Any, where: str, source: str, allowed: set[str]) -> None:
        self.where, self.source = where, source
        if not isinstance(data, dict):
            raise self.fail("expected a mapping")
        for key in data:
            if key in REFUSED and where == SECTION:
                raise ConfigError(REFUSED[key], path=source, field=f"{where}.{key}")
            if key not in allowed:
                raise self.fail(f"unknown key (allowed: {', '.join(sorted(allowed))})", key)
        self.data: dict[str, Any] = data

    def fail(self, message: str, key: str = "") -> ConfigError:
        return ConfigError(message, path=self.source, field=f"{self.where}.{key}".rstrip("."))

    def number(self, key: str, *, integer: bool = False, maximum: float = MAX_SETTING) -> Any:
        value = self.data.get(key)
        if value is None:
            return None
        kinds = int if integer else (int, float)
        # `not value > 0` and isfinite: YAML's .nan and .inf are floats, and NaN compares false.
        if (
            isinstance(value, bool)
            or not isinstance(value, kinds)
            or not value > 0
            or not math.isfinite(value)
        ):
            what = "a positive integer" if integer else "a positive number"
            raise self.fail(f"expected {what}, got {value!r}", key)
        if value > maximum:
            raise self.fail(f"expected at most {maximum}, got {value!r}", key)
        return value

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.fail(f"expected a string, got {value!r}", key)
        return value

    def child(self, key: str, allowed: set[str]) -> _Section:
        return _Section(self.data.get(key) or {}, f"{self.where}.{key}", self.source, allowed)


def load_agent_settings(path: Path) -> AgentSettings:
    """Read `runtime_agent:` (and `signals:` for the writer) from `path`."""
    source = str(path)
    document = read_stellaops(path)
    if SECTION not in document:
        raise ConfigError(f"no '{SECTION}' section", path=source, field=SECTION)
    top = _Section(document[SECTION], SECTION, source, _TOP_KEYS)
    metrics = top.child("metrics", _METRICS_KEYS)
    probes = top.child("probes", _PROBE_KEYS)
    export = top.child("export", _EXPORT_KEYS)
    found = document.get("signals")
    signals: dict[str, Any] = found if isinstance(found, dict) else {}

    function_map = top.text("function_map")
    trust_root = top.text("trust_root")
    maps = _map_directory(top, trust_root, signals) if "function_maps" in top.data else None
    if maps is not None:
        if function_map is not None:
            raise top.fail(
                "give function_map (one map) or function_maps (a directory of maps), not both",
                "function_map",
            )
        function_map = str(maps.directory)
    if function_map is None:
        raise top.fail(
            "the signed function map to collect for is required (or function_maps.directory)",
            "function_map",
        )

    listen = metrics.text("listen") or DEFAULT_LISTEN
    try:
        parse_listen(listen, field=f"{metrics.where}.listen")
    except ConfigError as exc:
        raise metrics.fail(exc.message, "listen") from None

    export_format = export.text("format") or "ndjson"
    if export_format not in EXPORT_FORMATS:
        raise export.fail(
            f"only ndjson is written (zstd-compressed, signed, hash-chained chunks), "
            f"got {export_format!r}",
            "format",
        )
    output_path = export.text("output_path")
    flush_ms = export.number("flush_interval_ms")
    aggregation_ms = export.number("aggregation_window_ms", integer=True)
    sampling_rate = probes.number("sampling_rate", maximum=1.0)
    for ours, theirs, value in (
        ("export.output_path", "output_directory", output_path),
        ("export.flush_interval_ms", "flush_interval_ms", flush_ms),
        ("probes.sampling_rate", "sampling_rate", sampling_rate),
    ):
        if value is not None and theirs in signals and signals[theirs] != value:
            raise ConfigError(
                f"signals.{theirs} says {signals[theirs]!r}: give one value, in one place",
                path=source,
                field=f"{SECTION}.{ours}",
            )

    return AgentSettings(
        start=StartOptions(
            function_map=Path(function_map),
            trust_root=Path(trust_root) if trust_root else None,
            config=path if "signals" in document else None,
            target=Path(output_path) if output_path else None,
            aggregation_window=f"{aggregation_ms}ms" if aggregation_ms else None,
            sampling_rate=sampling_rate,
            flush_interval_seconds=flush_ms / 1000 if flush_ms else None,
            max_probes=probes.number("max_concurrent", integer=True),
            attach_timeout_ms=probes.number("attach_timeout_ms", integer=True),
            health_check_seconds=_health_check_seconds(probes),
            disabled_attach_types=_disabled_types(probes),
        ),
        metrics_listen=listen,
        verify_every_seconds=metrics.number("verify_every_seconds") or DEFAULT_VERIFY_EVERY_SECONDS,
        stall_seconds=metrics.number("stall_seconds") or STALL_MIN_SECONDS,
        maps=maps,
    )


def _map_directory(
    top: _Section, trust_root: str | None, signals: dict[str, Any]
) -> MapDirectorySetting:
    """`function_maps:`; each map there is checked against the trust root, so one is needed,
    and each gets its own chain, so one chain id for all of them is refused."""
    section = top.child("function_maps", _MAPS_KEYS)
    directory = section.text("directory")
    if directory is None:
        raise section.fail("the directory of signed function maps is required", "directory")
    if trust_root is None:
        raise top.fail(
            "function_maps needs the trust root that verifies each map's signature", "trust_root"
        )
    if "chain_id" in signals:
        raise ConfigError(
            "one chain per map and host (SERVICE-HOST-DIGEST): a single chain id cannot name "
            "them; remove it",
            path=top.source,
            field="signals.chain_id",
        )
    poll = section.number("poll_seconds", maximum=3600) or DEFAULT_POLL_SECONDS
    return MapDirectorySetting(Path(directory), float(poll))


def _health_check_seconds(probes: _Section) -> float | None:
    """How often probed binaries and links are checked (None: the collector's default)."""
    value = probes.number("health_check_interval_ms", integer=True)
    return None if value is None else value / 1000


def _disabled_types(probes: _Section) -> frozenset[str] | None:
    """`default_types`, the attach types the agent may use: every other one is disabled, so
    the plan falls back among the allowed ones and names nodes none can reach in the seal."""
    value = probes.data.get("default_types")
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise probes.fail("expected a non-empty list of attach types", "default_types")
    unknown = sorted(set(value) - set(ATTACH_TYPES))
    if unknown:
        raise probes.fail(
            f"unknown attach type {unknown[0]!r} (known: {', '.join(ATTACH_TYPES)})",
            "default_types",
        )
    allowed = set(value) | {link for link, owner in _LINK_OF.items() if owner in value}
    return frozenset(set(ATTACH_TYPES) - allowed)
