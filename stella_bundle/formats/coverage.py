"""The coverage report: what `stella function-map verify` prints and `POST …/verify` answers.

The coverage part of the verification report (schemas/verification-report.schema.json: the
same path, tag, window and scope entries, typed by the same classes as the bundle report) and
the function map it was judged against. `to_dict` writes the keys in the order the engine
always has, so the API's bytes did not change when the report became typed.
"""

from __future__ import annotations

import functools
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


class CoverageReport:
    """A typed view over the report's document. The document is the one the engine built (see
    `VerificationResult.report`) or one `from_dict` checked field by field; each part is typed
    when first read, so printing a 10,000-path report as JSON builds no object per path (the
    typed construction and back cost more than the verification's JSON itself)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CoverageReport) and self._document == other._document

    __hash__ = None  # type: ignore[assignment]  # a mutable document: not hashable

    @property
    def service(self) -> str:
        return str(self._document["service"])

    @property
    def verified(self) -> bool:
        return bool(self._document["verified"])

    @property
    def observation_rate(self) -> float:
        return float(self._document["observation_rate"])

    @property
    def target_rate(self) -> float:
        return float(self._document["target_rate"])

    @property
    def confidence(self) -> float:
        return float(self._document["confidence"])

    @functools.cached_property
    def per_path_breakdown(self) -> tuple[PathResult, ...]:
        return tuple(
            PathResult(**{**entry, "nodes": tuple(entry["nodes"])})
            for entry in self._document["per_path_breakdown"]
        )

    @functools.cached_property
    def per_tag(self) -> Mapping[str, TagResult]:
        return {tag: TagResult(**values) for tag, values in self._document["per_tag"].items()}

    @property
    def unexpected_symbols(self) -> tuple[Mapping[str, Any], ...]:
        """Each as the engine reports it (node fields, counts, probe types, diagnosis)."""
        return tuple(self._document["unexpected_symbols"])

    @property
    def missing_symbols(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(self._document["missing_symbols"])

    @property
    def confidence_detail(self) -> Mapping[str, Any]:
        detail: Mapping[str, Any] = self._document["confidence_detail"]
        return detail

    @property
    def diagnoses(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(self._document["diagnoses"])

    @functools.cached_property
    def window(self) -> Window:
        window = self._document["window"]
        return Window(window["from"], window["to"])

    @property
    def records(self) -> Mapping[str, int]:
        records: Mapping[str, int] = self._document["records"]
        return records

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(self._document["failures"])

    @functools.cached_property
    def scope(self) -> ScopeResult:
        scope = self._document["scope"]
        return ScopeResult(
            scope["declared"],
            scope["records_in_scope"],
            scope["records_out_of_scope"],
            tuple(scope["findings"]),
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self._document["warnings"])

    @functools.cached_property
    def function_map(self) -> FunctionMapRef:
        return FunctionMapRef(**self._document["function_map"])

    @property
    def json_compact(self) -> bool:
        return len(self._document["per_path_breakdown"]) > COMPACT_JSON_PATHS

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> CoverageReport:
        """Strict parse; MalformedDocumentError names the field at fault."""
        r = _Reader(source)
        d = r.object(data, "", _FIELDS, _FIELDS)

        def mappings(value: Any, where: str) -> tuple[Mapping[str, Any], ...]:
            return r.items(value, where, r.json_object)

        r.string(d["service"], "service")
        r.boolean(d["verified"], "verified")
        for name in ("observation_rate", "target_rate", "confidence"):
            r.rate(d[name], name)
        report = cls(d)
        # Each typed part read by its reader, which names the field at fault.
        report.per_path_breakdown = r.items(
            d["per_path_breakdown"], "per_path_breakdown", lambda v, w: PathResult.read(r, v, w)
        )
        report.per_tag = {
            tag: TagResult.read(r, values, f"per_tag.{tag}")
            for tag, values in r.json_object(d["per_tag"], "per_tag").items()
        }
        mappings(d["unexpected_symbols"], "unexpected_symbols")
        mappings(d["missing_symbols"], "missing_symbols")
        r.json_object(d["confidence_detail"], "confidence_detail")
        r.items(d["diagnoses"], "diagnoses", _diagnosis(r))
        report.window = Window.read(r, d["window"], "window")
        _counts(r, d["records"], "records")
        r.strings(d["failures"], "failures")
        report.scope = ScopeResult.read(r, d["scope"], "scope")
        r.strings(d["warnings"], "warnings")
        report.function_map = FunctionMapRef.read(r, d["function_map"], "function_map")
        return report

    def to_dict(self) -> dict[str, Any]:
        """The document (a new top level; the parts are the report's own: do not change them)."""
        return {name: self._document[name] for name in _FIELDS}


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
