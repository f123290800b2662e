"""The coverage report: what `stella function-map verify` prints and `POST …/verify` answers.

The coverage part of the verification report (schemas/verification-report.schema.json: the
same path, tag, window and scope entries, typed by the same classes as the bundle report) and
the function map it was judged against. `to_dict` writes the keys in the order the engine
always has, so the API's bytes did not change when the report became typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .report import PathResult, ScopeResult, TagResult, Window, _counts, _diagnosis, _Reader

# Above this many paths the JSON is written compact: the indenting encoder is pure Python
# (seconds for a 10,000-path map), the compact one is C.
COMPACT_JSON_PATHS: Final = 1000


@dataclass(frozen=True)
class FunctionMapRef:
    """The map a report was judged against: its digest and where it was read, when loaded."""

    service: str
    digest: str | None = None
    source: str | None = None
    signed: bool | None = None
    signature_checked: bool | None = None

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> FunctionMapRef:
        names = ("digest", "source", "signed", "signature_checked", "service")
        data = r.object(value, where, names, ("service",))
        return cls(
            service=r.string(data["service"], where + ".service"),
            digest=r.optional(data, "digest", where, r.string),
            source=r.optional(data, "source", where, r.string),
            signed=r.optional(data, "signed", where, r.boolean),
            signature_checked=r.optional(data, "signature_checked", where, r.boolean),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("digest", "source", "signed", "signature_checked"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["service"] = self.service
        return out


@dataclass(frozen=True)
class CoverageReport:
    service: str
    verified: bool
    observation_rate: float
    target_rate: float
    per_path_breakdown: tuple[PathResult, ...]
    per_tag: Mapping[str, TagResult]
    # Each symbol as the engine reports it (node fields, counts, probe types, diagnosis).
    unexpected_symbols: tuple[Mapping[str, Any], ...]
    missing_symbols: tuple[Mapping[str, Any], ...]
    confidence: float
    confidence_detail: Mapping[str, Any]
    diagnoses: tuple[Mapping[str, Any], ...]
    window: Window
    records: Mapping[str, int]
    failures: tuple[str, ...]
    scope: ScopeResult
    warnings: tuple[str, ...]
    function_map: FunctionMapRef

    @property
    def json_compact(self) -> bool:
        return len(self.per_path_breakdown) > COMPACT_JSON_PATHS

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> CoverageReport:
        """Strict parse; MalformedDocumentError names the field at fault."""
        r = _Reader(source)
        d = r.object(data, "", _FIELDS, _FIELDS)

        def mappings(value: Any, where: str) -> tuple[Mapping[str, Any], ...]:
            return r.items(value, where, r.json_object)

        return cls(
            service=r.string(d["service"], "service"),
            verified=r.boolean(d["verified"], "verified"),
            observation_rate=r.rate(d["observation_rate"], "observation_rate"),
            target_rate=r.rate(d["target_rate"], "target_rate"),
            per_path_breakdown=r.items(
                d["per_path_breakdown"], "per_path_breakdown", lambda v, w: PathResult.read(r, v, w)
            ),
            per_tag={
                tag: TagResult.read(r, values, f"per_tag.{tag}")
                for tag, values in r.json_object(d["per_tag"], "per_tag").items()
            },
            unexpected_symbols=mappings(d["unexpected_symbols"], "unexpected_symbols"),
            missing_symbols=mappings(d["missing_symbols"], "missing_symbols"),
            confidence=r.rate(d["confidence"], "confidence"),
            confidence_detail=r.json_object(d["confidence_detail"], "confidence_detail"),
            diagnoses=r.items(d["diagnoses"], "diagnoses", _diagnosis(r)),
            window=Window.read(r, d["window"], "window"),
            records=_counts(r, d["records"], "records"),
            failures=r.strings(d["failures"], "failures"),
            scope=ScopeResult.read(r, d["scope"], "scope"),
            warnings=r.strings(d["warnings"], "warnings"),
            function_map=FunctionMapRef.read(r, d["function_map"], "function_map"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "verified": self.verified,
            "observation_rate": self.observation_rate,
            "target_rate": self.target_rate,
            "per_path_breakdown": [path.to_dict() for path in self.per_path_breakdown],
            "per_tag": {tag: _tag_dict(result) for tag, result in self.per_tag.items()},
            "unexpected_symbols": [dict(item) for item in self.unexpected_symbols],
            "missing_symbols": [dict(item) for item in self.missing_symbols],
            "confidence": self.confidence,
            "confidence_detail": dict(self.confidence_detail),
            "diagnoses": [dict(item) for item in self.diagnoses],
            "window": self.window.to_dict(),
            "records": dict(self.records),
            "failures": list(self.failures),
            "scope": self.scope.to_dict(),
            "warnings": list(self.warnings),
            "function_map": self.function_map.to_dict(),
        }


_FIELDS: Final = (
    "service",
    "verified",
    "observation_rate",
    "target_rate",
    "per_path_breakdown",
    "per_tag",
    "unexpected_symbols",
    "missing_symbols",
    "confidence",
    "confidence_detail",
    "diagnoses",
    "window",
    "records",
    "failures",
    "scope",
    "warnings",
    "function_map",
)
# The engine's order of a tag's fields: its counts, then its verdict.
_TAG_ORDER: Final = (
    "required_paths",
    "observed_paths",
    "partial_paths",
    "missing_paths",
    "optional_paths",
    "optional_observed_paths",
    "observation_rate",
    "target_rate",
    "verified",
)


def _tag_dict(result: TagResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _TAG_ORDER:
        value = getattr(result, name)
        if value is not None:
            out[name] = value
    return out
