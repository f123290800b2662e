"""The seal of an evidence chunk: its predicate (DESIGN.md §4, schemas/evidence-chunk.schema.json),
with the collector identity, loss counters and probe failures/reattachments it carries.

Building, signing and parsing seal files are `evidence/seal.py`; the chain they form is
`evidence/chain.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from ..canonical import MAX_SAFE_INTEGER, saturating_sum
from ..digests import SHA256_HEX_RE
from ..errors import MalformedDocumentError
from ..timeutil import is_rfc3339_timestamp

CHAIN_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
MAX_SEQUENCE: Final = 9_999_999_999  # ten digits in the file name
SealReason = Literal["size", "age", "shutdown", "recovered"]
SEAL_REASONS: Final = ("size", "age", "shutdown", "recovered")
COMPRESSION: Final = "zstd"


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
        if isinstance(probe_set, str) and not SHA256_HEX_RE.match(probe_set):
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


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, found {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


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


@dataclass(frozen=True)
class PreviousLink:
    sequence: int
    sha256: str  # of the previous seal file's bytes

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "sha256": self.sha256}


@dataclass(frozen=True)
class ChunkContent:
    sha256: str  # of the uncompressed canonical NDJSON
    records: int
    bytes: int
    compression: str = COMPRESSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "records": self.records,
            "bytes": self.bytes,
            "compression": self.compression,
        }


@dataclass(frozen=True)
class SealPredicate:
    chain_id: str
    sequence: int
    previous: PreviousLink | None
    content: ChunkContent
    first_observed_at: str | None
    last_observed_at: str | None
    sealed_at: str
    reason: str
    final: bool
    collector: CollectorInfo
    loss: LossCounters
    # Probes that could not be attached since the previous seal (optional; absent when none).
    probe_failures: tuple[ProbeFailure, ...] = ()
    # Probes reattached by the health check since the previous seal (optional; absent: none).
    probe_reattachments: tuple[ProbeReattachment, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chain_id": self.chain_id,
            "sequence": self.sequence,
            "previous": self.previous.to_dict() if self.previous else None,
            "content": self.content.to_dict(),
            "window": {
                "first_observed_at": self.first_observed_at,
                "last_observed_at": self.last_observed_at,
            },
            "sealed_at": self.sealed_at,
            "reason": self.reason,
            "final": self.final,
            "collector": self.collector.to_dict(),
            "loss": self.loss.to_dict(),
        }
        if self.probe_failures:
            out["probe_failures"] = [failure.to_dict() for failure in self.probe_failures]
        if self.probe_reattachments:
            out["probe_reattachments"] = [item.to_dict() for item in self.probe_reattachments]
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> SealPredicate:
        """Strict parse; MalformedDocumentError names the predicate field at fault."""

        def fail(message: str, field: str) -> MalformedDocumentError:
            return MalformedDocumentError(message, path=source, field=f"predicate.{field}")

        if not isinstance(data, dict):
            raise MalformedDocumentError("predicate is not an object", path=source)
        _known_fields(data, (*_REQUIRED_FIELDS, *_OPTIONAL_FIELDS), fail, "")
        for name in _REQUIRED_FIELDS:
            if name not in data:
                raise fail("required field is missing", name)
        chain_id = data["chain_id"]
        if not isinstance(chain_id, str) or not CHAIN_ID_RE.match(chain_id):
            raise fail("expected a chain id", "chain_id")
        sequence = _sequence(data["sequence"], fail, "sequence")
        previous = None
        if data["previous"] is not None:
            raw = data["previous"]
            if not isinstance(raw, dict):
                raise fail("expected an object or null", "previous")
            _known_fields(raw, ("sequence", "sha256"), fail, "previous.")
            previous = PreviousLink(
                _sequence(raw.get("sequence"), fail, "previous.sequence"),
                _sha256(raw.get("sha256"), fail, "previous.sha256"),
            )
        raw_content = data["content"]
        if not isinstance(raw_content, dict):
            raise fail("expected an object", "content")
        _known_fields(raw_content, ("sha256", "records", "bytes", "compression"), fail, "content.")
        compression = raw_content.get("compression")
        if compression != COMPRESSION:
            raise fail(
                f"unsupported compression {compression!r}; expected 'zstd'", "content.compression"
            )
        content = ChunkContent(
            _sha256(raw_content.get("sha256"), fail, "content.sha256"),
            _count(raw_content.get("records"), fail, "content.records"),
            _count(raw_content.get("bytes"), fail, "content.bytes"),
            compression,
        )
        window = data["window"]
        if not isinstance(window, dict):
            raise fail("expected an object", "window")
        _known_fields(window, ("first_observed_at", "last_observed_at"), fail, "window.")
        for name in ("first_observed_at", "last_observed_at"):
            if name not in window:
                raise fail("required field is missing", f"window.{name}")
        first = _optional_time(window.get("first_observed_at"), fail, "window.first_observed_at")
        last = _optional_time(window.get("last_observed_at"), fail, "window.last_observed_at")
        if not is_rfc3339_timestamp(data["sealed_at"]):
            raise fail("expected an RFC 3339 timestamp", "sealed_at")
        if data["reason"] not in SEAL_REASONS:
            raise fail(f"expected one of {', '.join(SEAL_REASONS)}", "reason")
        if not isinstance(data["final"], bool):
            raise fail("expected true or false", "final")
        return cls(
            chain_id=chain_id,
            sequence=sequence,
            previous=previous,
            content=content,
            first_observed_at=first,
            last_observed_at=last,
            sealed_at=data["sealed_at"],
            reason=data["reason"],
            final=data["final"],
            collector=CollectorInfo.from_dict(data["collector"], source),
            loss=LossCounters.from_dict(data["loss"], source),
            probe_failures=parse_probe_failures(
                data.get("probe_failures", []), source, "predicate.probe_failures"
            ),
            probe_reattachments=parse_probe_reattachments(
                data.get("probe_reattachments", []), source, "predicate.probe_reattachments"
            ),
        )


_REQUIRED_FIELDS: Final = (
    "chain_id",
    "sequence",
    "previous",
    "content",
    "window",
    "sealed_at",
    "reason",
    "final",
    "collector",
    "loss",
)
_OPTIONAL_FIELDS: Final = ("probe_failures", "probe_reattachments")


def _known_fields(data: dict[str, Any], known: Sequence[str], fail: Any, where: str) -> None:
    """Unknown fields are refused, as by every format model (see stella_bundle/formats)."""
    unknown = sorted(data.keys() - set(known))
    if unknown:
        raise fail("unknown field", where + unknown[0])


def _sequence(value: Any, fail: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEQUENCE:
        raise fail(f"expected an integer 1..{MAX_SEQUENCE}", field)
    return value


def _count(value: Any, fail: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise fail("expected a non-negative integer (at most 2**53 - 1)", field)
    return value


def _sha256(value: Any, fail: Any, field: str) -> str:
    if not isinstance(value, str) or not SHA256_HEX_RE.match(value):
        raise fail("expected 64 lowercase hex digits", field)
    return value


def _optional_time(value: Any, fail: Any, field: str) -> str | None:
    if value is None:
        return None
    if not is_rfc3339_timestamp(value):
        raise fail("expected an RFC 3339 timestamp or null", field)
    return str(value)
