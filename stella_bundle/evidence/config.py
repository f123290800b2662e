"""Writer options and the reading of `stellaops.yaml` (`signals:`); the collector identity and loss
counters a seal carries are `formats/seal.py`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configfile import refuse_unknown_keys
from ..errors import ConfigError

DEFAULT_MAX_SIZE_MB = 64
DEFAULT_MAX_AGE_SECONDS = 300
DEFAULT_ZSTD_LEVEL = 3
DEFAULT_FLUSH_INTERVAL_SECONDS = 1.0
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class WriterConfig:
    """When a chunk is sealed (any limit reached) and how often the open chunk is made durable.

    `max_size_mb` counts uncompressed canonical NDJSON (MiB); `max_records=None` means no limit.
    """

    max_size_mb: float = DEFAULT_MAX_SIZE_MB
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    max_records: int | None = None
    zstd_level: int = DEFAULT_ZSTD_LEVEL
    flush_interval_seconds: float = DEFAULT_FLUSH_INTERVAL_SECONDS

    def __post_init__(self) -> None:
        def positive(name: str, value: float) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"expected a positive number, got {value!r}", field=name)
            if not math.isfinite(value):
                raise ConfigError(f"expected a finite number, got {value!r}", field=name)

        positive("max_size_mb", self.max_size_mb)
        positive("max_age_seconds", self.max_age_seconds)
        if self.max_records is not None and (
            isinstance(self.max_records, bool)
            or not isinstance(self.max_records, int)
            or self.max_records < 1
        ):
            raise ConfigError(
                f"expected an integer >= 1, got {self.max_records!r}", field="max_records"
            )
        if (
            isinstance(self.zstd_level, bool)
            or not isinstance(self.zstd_level, int)
            or not 1 <= self.zstd_level <= 22
        ):
            raise ConfigError(
                f"expected an integer 1..22, got {self.zstd_level!r}", field="zstd_level"
            )
        interval = self.flush_interval_seconds
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 <= interval < math.inf  # NaN and .inf too
        ):
            raise ConfigError(
                f"expected a number >= 0 (0: flush on every append), got {interval!r}",
                field="flush_interval_seconds",
            )

    @property
    def max_size_bytes(self) -> int:
        return max(1, int(self.max_size_mb * 1024 * 1024))


def read_boot_id() -> str | None:
    try:
        return BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


# The loss.by_reason key counting probes that could not be attached (their functions unseen).
PROBE_ATTACH_FAILED_REASON = "gap.probe_attach_failed"
# The loss.by_reason key of the first seal after a collector that did not stop cleanly (its
# last seal not final): events it read but had not written, and those while none ran, unknown.
UNCLEAN_RESTART_REASON = "gap.unclean_restart"


# --- stellaops.yaml ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalsConfig:
    """The `signals:` section of `stellaops.yaml` as the evidence writer uses it.

    The collector's keys (mode, filters, …) are checked here and kept in `other` for it.
    """

    output_directory: Path | None = None
    chain_id: str | None = None
    key_file: Path | None = None
    writer: WriterConfig = field(default_factory=WriterConfig)
    other: dict[str, Any] = field(default_factory=dict)


_ROTATION_KEYS = {
    "max_size_mb",
    "max_age_seconds",
    "max_age_minutes",
    "max_age_hours",
    "max_records",
}
_SIGNING_KEYS = {"enabled", "key_file", "key", "key_id", "submit_to_rekor"}
_WRITER_KEYS = {
    "output_directory",
    "chain_id",
    "rotation",
    "signing",
    "zstd_level",
    "flush_interval_ms",
    "flush_interval_seconds",
}


# The collector's keys of `signals:` (`signals start`, `agent run`), by the type they take.
_COLLECTOR_KEYS: dict[str, type | tuple[type, ...]] = {
    "enabled": bool,
    "mode": str,
    "window_seconds": (int, float),
    "aggregation_window": (str, int),
    "sampling_rate": (int, float),
    "pids": list,
    "containers": list,
    "path_allow": list,
    "path_deny": list,
    "probes_dir": str,
    "container_metadata": str,
    # Where the runtimes keep what names a container, when not their defaults (k3s keeps
    # containerd's root under /var/lib/rancher/k3s/agent/containerd).
    "containerd_root": str,
    "crio_storage_roots": list,
    "filters": dict,
}
_FILTER_KEYS = {
    "target_containers": "containers",
    "path_allowlist": "path_allow",
    "path_denylist": "path_deny",
    "pids": "pids",
    "sampling_rate": "sampling_rate",
}
_TYPE_NAMES: dict[type | tuple[type, ...], str] = {
    bool: "true or false",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    (int, float): "a number",
    (str, int): "a duration such as 1000ms",
}


def collector_keys(other: dict[str, Any], source: str | Path | None) -> dict[str, Any]:
    """The collector's keys of `signals:` (what the writer does not read), checked whatever
    command reads the file: a misspelt key is refused, never left to its default; `filters:`
    flattened."""
    settings: dict[str, Any] = {}
    for key, value in other.items():
        expected = _COLLECTOR_KEYS.get(key)
        if expected is None:
            allowed = ", ".join(sorted({*_WRITER_KEYS, *_COLLECTOR_KEYS}))
            raise ConfigError(
                f"unknown key (allowed: {allowed})", path=source, field=f"signals.{key}"
            )
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise ConfigError(
                f"expected {_TYPE_NAMES[expected]}, got {value!r}",
                path=source,
                field=f"signals.{key}",
            )
        settings[key] = value
    for key, value in dict(settings.pop("filters", {})).items():
        target = _FILTER_KEYS.get(key)
        if target is None:
            allowed = ", ".join(sorted(_FILTER_KEYS))
            raise ConfigError(
                f"unknown key (allowed: {allowed})", path=source, field=f"signals.filters.{key}"
            )
        settings[target] = value
    return settings


# The sections of stellaops.yaml this toolkit reads. The file is the StellaOps platform's: the
# product documents put other modules' sections beside these (`alerts:`), so another section
# is passed over, but not one a typo away from these: `observaton_store:` or `Signals:` read
# as absent would leave every setting at its default without a word.
SECTIONS = ("signals", "runtime_agent", "observation_store", "tetragon")


def read_stellaops(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of `stellaops.yaml` (each component reads its own section); its
    errors are placed at the file's line and column (configfile)."""
    import difflib

    from ..configfile import read_yaml_config

    document = read_yaml_config(path)
    if not isinstance(document, dict):
        raise ConfigError("expected a YAML mapping at the top level", path=str(path))
    for key in document:
        if not isinstance(key, str) or key in SECTIONS:
            continue
        folded = key.strip().lower().replace("-", "_").replace(" ", "_")
        near = difflib.get_close_matches(folded, SECTIONS, n=1, cutoff=0.8)
        if near:
            raise ConfigError(
                f"unknown section: did you mean {near[0]!r}? (this toolkit reads "
                f"{', '.join(SECTIONS)}; other products' sections are passed over, not one "
                "this close to ours)",
                path=str(path),
                field=key,
            )
    return document


def load_signals_config(path: str | Path) -> SignalsConfig:
    """Parse `stellaops.yaml`; errors name the file and the dotted key."""
    source = str(path)
    signals = read_stellaops(path).get("signals")
    if signals is None:
        raise ConfigError("no 'signals' section", path=source, field="signals")
    if not isinstance(signals, dict):
        raise ConfigError("expected a mapping", path=source, field="signals")
    return parse_signals_section(signals, source)


def parse_signals_section(signals: dict[str, Any], source: str | None = None) -> SignalsConfig:
    def fail(message: str, key: str) -> ConfigError:
        return ConfigError(message, path=source, field=f"signals.{key}")

    writer_args = {
        **_rotation_args(signals.get("rotation") or {}, fail, source),
        **_flush_args(signals, fail),
    }
    if "zstd_level" in signals:
        writer_args["zstd_level"] = signals["zstd_level"]
    try:
        writer = WriterConfig(**writer_args)
    except ConfigError as exc:
        # WriterConfig names its own fields; the file's key is the one to name.
        key = {"max_records": "rotation.max_records"}.get(exc.field or "", exc.field)
        raise fail(exc.message, key or "rotation") from exc

    other = {k: v for k, v in signals.items() if k not in _WRITER_KEYS}
    collector_keys(other, source)
    key_file = _signing_key(signals.get("signing"), fail, source)
    output = signals.get("output_directory")
    if output is not None and not isinstance(output, str):
        raise fail("expected a path string", "output_directory")
    chain_id = signals.get("chain_id")
    if chain_id is not None and not isinstance(chain_id, str):
        raise fail("expected a string", "chain_id")
    return SignalsConfig(
        output_directory=Path(output) if output else None,
        chain_id=chain_id,
        key_file=key_file,
        writer=writer,
        other=other,
    )


def _rotation_args(rotation: Any, fail: Any, source: str | None) -> dict[str, Any]:
    """WriterConfig's arguments from `signals.rotation` (one age, in any unit)."""
    if not isinstance(rotation, dict):
        raise fail("expected a mapping", "rotation")
    refuse_unknown_keys(rotation, _ROTATION_KEYS, source, "signals.rotation.")
    ages = [k for k in ("max_age_seconds", "max_age_minutes", "max_age_hours") if k in rotation]
    if len(ages) > 1:
        raise fail(f"give one of {', '.join(ages)}, not several", "rotation")
    args: dict[str, Any] = {}
    for key, scale in (("max_age_seconds", 1), ("max_age_minutes", 60), ("max_age_hours", 3600)):
        if key in rotation:
            args["max_age_seconds"] = _number(rotation[key], fail, f"rotation.{key}") * scale
    if "max_size_mb" in rotation:
        args["max_size_mb"] = _number(rotation["max_size_mb"], fail, "rotation.max_size_mb")
    if rotation.get("max_records") is not None:
        args["max_records"] = rotation["max_records"]
    return args


def _flush_args(signals: dict[str, Any], fail: Any) -> dict[str, Any]:
    """WriterConfig's flush interval from flush_interval_ms or flush_interval_seconds."""
    if "flush_interval_ms" in signals and "flush_interval_seconds" in signals:
        raise fail(
            "give flush_interval_ms or flush_interval_seconds, not both", "flush_interval_ms"
        )
    if "flush_interval_ms" in signals:
        seconds = _number(signals["flush_interval_ms"], fail, "flush_interval_ms", zero=True) / 1000
        return {"flush_interval_seconds": seconds}
    if "flush_interval_seconds" in signals:
        seconds = _number(
            signals["flush_interval_seconds"], fail, "flush_interval_seconds", zero=True
        )
        return {"flush_interval_seconds": seconds}
    return {}


def _number(value: Any, fail: Any, key: str, *, zero: bool = False) -> float:
    """A number of the file, checked as written (before any unit is applied), so the error
    names the key and the value the file gives."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"expected a number, got {value!r}", key)
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        what = "a finite number >= 0" if zero else "a positive finite number"
        raise fail(f"expected {what}, got {value!r}", key)
    return float(value) if isinstance(value, float) else value


def _signing_key(signing: Any, fail: Any, source: str | None) -> Path | None:
    if signing is None:
        return None
    if not isinstance(signing, dict):
        raise fail("expected a mapping", "signing")
    refuse_unknown_keys(signing, _SIGNING_KEYS, source, "signals.signing.")
    if signing.get("enabled") is False:
        raise fail(
            "unsigned evidence is not supported: every seal is signed (remove enabled: false)",
            "signing.enabled",
        )
    if signing.get("submit_to_rekor"):
        raise fail(
            "transparency-log submission is not supported by the offline writer; set it to false",
            "signing.submit_to_rekor",
        )
    if "key_file" in signing and "key" in signing:
        # Two names of one setting: which key signs would be a guess (key_file won).
        raise fail("give key_file or key, not both", "signing.key")
    key_file = signing.get("key_file", signing.get("key"))
    if key_file is None:
        if "key_id" in signing:
            raise fail(
                f"key_id {signing['key_id']!r}: keyless or KMS signing is not supported offline; "
                "set signing.key_file to a PKCS#8 PEM private key",
                "signing.key_id",
            )
        return None
    if not isinstance(key_file, str) or not key_file:
        raise fail("expected a path to a PKCS#8 PEM private key", "signing.key_file")
    return Path(key_file)
