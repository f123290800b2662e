"""Writer options, collector identity and loss counters; `stellaops.yaml` (`signals:`) loading."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..canonical import MAX_SAFE_INTEGER, saturating_sum
from ..errors import ConfigError, MalformedDocumentError
from ..jsonio import read_bytes

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
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise ConfigError(
                f"expected a number >= 0 (0: flush on every append), got {interval!r}",
                field="flush_interval_seconds",
            )

    @property
    def max_size_bytes(self) -> int:
        return max(1, int(self.max_size_mb * 1024 * 1024))


@dataclass(frozen=True)
class CollectorInfo:
    """Who wrote a chunk; `boot_id` and `probe_set_sha256` are None for imports.

    `source` names where imported events came from (the Tetragon bridge: `type`, `node_name`,
    `export_file`); absent for the toolkit's own collector.
    """

    id: str
    host: str
    boot_id: str | None
    version: str
    probe_set_sha256: str | None
    source: Mapping[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "host": self.host,
            "boot_id": self.boot_id,
            "version": self.version,
            "probe_set_sha256": self.probe_set_sha256,
        }
        if self.source is not None:
            out["source"] = dict(self.source)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> CollectorInfo:
        if not isinstance(data, dict):
            raise MalformedDocumentError(
                "expected a collector object", path=source, field="collector"
            )
        unknown = sorted(data.keys() - _COLLECTOR_FIELDS)
        if unknown:
            raise MalformedDocumentError(
                "unknown field", path=source, field=f"collector.{unknown[0]}"
            )
        if data.get("id") == "":
            raise MalformedDocumentError("must not be empty", path=source, field="collector.id")
        probe_set = data.get("probe_set_sha256")
        if isinstance(probe_set, str) and not _SHA256_HEX_RE.match(probe_set):
            raise MalformedDocumentError(
                "expected 64 lowercase hex digits or null",
                path=source,
                field="collector.probe_set_sha256",
            )
        origin = data.get("source")
        if origin is not None and (
            not isinstance(origin, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in origin.items())
        ):
            raise MalformedDocumentError(
                "expected an object of strings", path=source, field="collector.source"
            )
        try:
            return cls(
                id=_str(data["id"]),
                host=_str(data["host"]),
                boot_id=_opt_str(data["boot_id"]),
                version=_str(data["version"]),
                probe_set_sha256=_opt_str(data["probe_set_sha256"]),
                source=origin,
            )
        except (KeyError, TypeError) as exc:
            raise MalformedDocumentError(
                f"collector object is incomplete or mistyped ({exc})",
                path=source,
                field="collector",
            ) from exc


_COLLECTOR_FIELDS = frozenset(("id", "host", "boot_id", "version", "probe_set_sha256", "source"))
# `\Z`, not `$`: `$` also matches before a final newline.
_SHA256_HEX_RE = re.compile(r"^[0-9a-f]{64}\Z")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, found {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


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


@dataclass(frozen=True)
class ProbeFailure:
    """A function-map node whose probe could not be attached: which node, where, and why.

    `errno` is the kernel's (or ENOENT for a symbol or binary not found); `error` says what it
    means in words, since some kernel errnos (524, ENOTSUPP) have no libc name.
    """

    node_hash: str
    function_name: str
    purl: str
    binary_path: str | None
    errno: int | None
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_hash": self.node_hash,
            "function_name": self.function_name,
            "purl": self.purl,
            "binary_path": self.binary_path,
            "errno": self.errno,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None, where: str) -> ProbeFailure:
        def fail(message: str, name: str = "") -> MalformedDocumentError:
            return MalformedDocumentError(
                message, path=source, field=f"{where}.{name}" if name else where
            )

        if not isinstance(data, dict):
            raise fail("expected an object")
        unknown = set(data) - _PROBE_FAILURE_FIELDS
        if unknown:
            raise fail("unknown field", min(unknown))
        missing = _PROBE_FAILURE_FIELDS - set(data)  # binary_path and errno: null, not absent
        if missing:
            raise fail("required field is missing", min(missing))
        for name in ("node_hash", "function_name", "purl", "error"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise fail("expected a non-empty string", name)
        binary = data.get("binary_path")
        if binary is not None and not isinstance(binary, str):
            raise fail("expected a string or null", "binary_path")
        number = data.get("errno")
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 4096
        ):
            raise fail("expected an errno 1..4095 or null", "errno")
        return cls(
            data["node_hash"], data["function_name"], data["purl"], binary, number, data["error"]
        )


_PROBE_FAILURE_FIELDS = frozenset(
    ("node_hash", "function_name", "purl", "binary_path", "errno", "error")
)


def parse_probe_failures(
    data: Any, source: str | Path | None, where: str
) -> tuple[ProbeFailure, ...]:
    if not isinstance(data, list):
        raise MalformedDocumentError("expected a list", path=source, field=where)
    return tuple(
        ProbeFailure.from_dict(item, source, f"{where}[{i}]") for i, item in enumerate(data)
    )


# Why probes were reattached (collector/health.py); each counted in loss.by_reason["gap.<reason>"].
REATTACH_REASONS = ("binary_replaced", "link_lost")


@dataclass(frozen=True)
class ProbeReattachment:
    """Probes the collector's health check reattached since the previous seal: why (a binary
    replaced on disk, links lost), which binary and builds, how many probes were reattached
    and how many could not be (those are named in `probe_failures` too)."""

    reason: str
    binary_path: str | None
    previous_build_id: str | None
    build_id: str | None
    reattached: int
    failed: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "binary_path": self.binary_path,
            "previous_build_id": self.previous_build_id,
            "build_id": self.build_id,
            "reattached": self.reattached,
            "failed": self.failed,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None, where: str) -> ProbeReattachment:
        def fail(message: str, name: str = "") -> MalformedDocumentError:
            return MalformedDocumentError(
                message, path=source, field=f"{where}.{name}" if name else where
            )

        if not isinstance(data, dict):
            raise fail("expected an object")
        unknown = set(data) - _REATTACHMENT_FIELDS
        if unknown:
            raise fail("unknown field", min(unknown))
        missing = _REATTACHMENT_FIELDS - set(data)
        if missing:
            raise fail("required field is missing", min(missing))
        if data["reason"] not in REATTACH_REASONS:
            raise fail(f"expected one of {', '.join(REATTACH_REASONS)}", "reason")
        for name in ("binary_path", "previous_build_id", "build_id"):
            if data[name] is not None and (not isinstance(data[name], str) or not data[name]):
                raise fail("expected a non-empty string or null", name)
        for name in ("reattached", "failed"):
            value = data[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= MAX_SAFE_INTEGER
            ):
                raise fail("expected a non-negative integer (at most 2**53 - 1)", name)
        if not isinstance(data["detail"], str) or not data["detail"]:
            raise fail("expected a non-empty string", "detail")
        return cls(
            data["reason"],
            data["binary_path"],
            data["previous_build_id"],
            data["build_id"],
            data["reattached"],
            data["failed"],
            data["detail"],
        )


_REATTACHMENT_FIELDS = frozenset(
    ("reason", "binary_path", "previous_build_id", "build_id", "reattached", "failed", "detail")
)


def parse_probe_reattachments(
    data: Any, source: str | Path | None, where: str
) -> tuple[ProbeReattachment, ...]:
    if not isinstance(data, list):
        raise MalformedDocumentError("expected a list", path=source, field=where)
    return tuple(
        ProbeReattachment.from_dict(item, source, f"{where}[{i}]") for i, item in enumerate(data)
    )


_COUNTER_NAMES = ("ring_buffer_dropped", "sampled_out", "filtered_out", "torn_records")


@dataclass
class LossCounters:
    """Events that were not recorded. `torn_records`: lines lost to a crash mid-write.

    `by_reason` (optional) breaks counts down by why: `dropped.<kind>:<reason>` for events not
    recorded (already counted in `filtered_out`), `gap.<reason>` for input possibly missed
    (how much is unknown), `redacted.<what>` for values removed from recorded events by a
    privacy filter.
    """

    ring_buffer_dropped: int = 0
    sampled_out: int = 0
    filtered_out: int = 0
    torn_records: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Saturating at MAX_SAFE_INTEGER, as every sum here: reports must carry it."""
        return saturating_sum(
            self.ring_buffer_dropped, self.sampled_out, self.filtered_out, self.torn_records
        )

    def add(self, other: LossCounters) -> None:
        for name in _COUNTER_NAMES:
            setattr(self, name, saturating_sum(getattr(self, name), getattr(other, name)))
        for reason, count in other.by_reason.items():
            self.by_reason[reason] = saturating_sum(self.by_reason.get(reason, 0), count)

    def counters(self) -> dict[str, int]:
        """The four counts, without the breakdown."""
        return {name: getattr(self, name) for name in _COUNTER_NAMES}

    def report_dict(self) -> dict[str, Any]:
        """What reports show: every counter, zeros included, and the breakdown if any."""
        out: dict[str, Any] = self.counters()
        if self.by_reason:
            out["by_reason"] = dict(sorted(self.by_reason.items()))
        return out

    def to_dict(self) -> dict[str, Any]:
        # The optional fields (absent means 0, none) are written only when they hold something,
        # so a seal reads and writes back the same (stella_bundle/formats).
        out = self.report_dict()
        if not self.torn_records:
            del out["torn_records"]
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> LossCounters:
        if not isinstance(data, dict):
            raise MalformedDocumentError("expected a loss object", path=source, field="loss")
        unknown = sorted(data.keys() - {*_COUNTER_NAMES, "by_reason"})
        if unknown:
            raise MalformedDocumentError("unknown field", path=source, field=f"loss.{unknown[0]}")
        counters = cls()
        for name in _COUNTER_NAMES:
            if name not in data and name != "torn_records":  # the one optional counter
                raise MalformedDocumentError(
                    "required field is missing", path=source, field=f"loss.{name}"
                )
            value = data.get(name, 0)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= MAX_SAFE_INTEGER
            ):
                raise MalformedDocumentError(
                    "expected a non-negative integer (at most 2**53 - 1)",
                    path=source,
                    field=f"loss.{name}",
                )
            setattr(counters, name, value)
        reasons = data.get("by_reason", {})
        if not isinstance(reasons, dict) or not all(
            isinstance(k, str)
            and isinstance(v, int)
            and not isinstance(v, bool)
            and 0 <= v <= MAX_SAFE_INTEGER
            for k, v in reasons.items()
        ):
            raise MalformedDocumentError(
                "expected reason → non-negative integer (at most 2**53 - 1)",
                path=source,
                field="loss.by_reason",
            )
        counters.by_reason = dict(reasons)
        return counters


# --- stellaops.yaml ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalsConfig:
    """The `signals:` section of `stellaops.yaml` as the evidence writer uses it.

    Keys of other components (filters, probes, …) are kept in `other` for them to read.
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


def read_stellaops(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of `stellaops.yaml` (each component reads its own section)."""
    import yaml  # here: the record pass and `bundle verify` import this module, not YAML

    source = str(path)
    try:
        document = yaml.safe_load(read_bytes(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"malformed YAML: {getattr(exc, 'problem', exc)}", path=source, line=line
        ) from exc
    except RecursionError as exc:
        raise ConfigError("malformed YAML: nested too deeply", path=source) from exc
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ConfigError(
            f"malformed YAML: number out of range: {str(exc).splitlines()[0]}", path=source
        ) from exc
    if not isinstance(document, dict):
        raise ConfigError("expected a YAML mapping at the top level", path=source)
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
        **_rotation_args(signals.get("rotation") or {}, fail),
        **_flush_args(signals, fail),
    }
    if "zstd_level" in signals:
        writer_args["zstd_level"] = signals["zstd_level"]
    try:
        writer = WriterConfig(**writer_args)
    except ConfigError as exc:
        raise fail(exc.message, exc.field or "rotation") from exc

    key_file = _signing_key(signals.get("signing"), fail)
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
        other={k: v for k, v in signals.items() if k not in _WRITER_KEYS},
    )


def _rotation_args(rotation: Any, fail: Any) -> dict[str, Any]:
    """WriterConfig's arguments from `signals.rotation` (one age, in any unit)."""
    if not isinstance(rotation, dict):
        raise fail("expected a mapping", "rotation")
    unknown = set(rotation) - _ROTATION_KEYS
    if unknown:
        raise fail(
            f"unknown key (allowed: {', '.join(sorted(_ROTATION_KEYS))})",
            f"rotation.{min(unknown)}",
        )
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
        seconds = _number(signals["flush_interval_ms"], fail, "flush_interval_ms") / 1000
        return {"flush_interval_seconds": seconds}
    if "flush_interval_seconds" in signals:
        seconds = _number(signals["flush_interval_seconds"], fail, "flush_interval_seconds")
        return {"flush_interval_seconds": seconds}
    return {}


def _number(value: Any, fail: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"expected a number, got {value!r}", key)
    return float(value) if isinstance(value, float) else value


def _signing_key(signing: Any, fail: Any) -> Path | None:
    if signing is None:
        return None
    if not isinstance(signing, dict):
        raise fail("expected a mapping", "signing")
    unknown = set(signing) - _SIGNING_KEYS
    if unknown:
        raise fail(
            f"unknown key (allowed: {', '.join(sorted(_SIGNING_KEYS))})", f"signing.{min(unknown)}"
        )
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
