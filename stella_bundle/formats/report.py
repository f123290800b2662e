"""The verification report's predicate (schemas/verification-report.schema.json).

Typed at every level a reader looks into: the verdict, the policy and the attestations it rests
on, each path, each tag, each evidence chain, each step. A path's `nodes`, a chain's `gaps` and
`findings`, the symbols, `confidence_detail`, `diagnoses` and `records` are the verification
engine's detail, kept as plain JSON (open in the schema too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from ..canonical import MAX_SAFE_INTEGER
from ..digests import SHA256_HEX_RE
from ..errors import MalformedDocumentError
from ..timeutil import is_rfc3339_timestamp

T = TypeVar("T")
RESULTS: Final = ("PASSED", "FAILED")
PATH_STATUSES: Final = ("observed", "partial", "missing")
STEP_STATUSES: Final = ("passed", "failed", "skipped", "error")
DIAGNOSES: Final = ("version drift", "normalisation mismatch")
# `\Z`, not `$`: `$` also matches before a final newline (the schema's `$` is the end of input).
_DIGEST_NAME_RE: Final = re.compile(r"^[a-z0-9_-]+\Z")
_HEX_RE: Final = re.compile(r"^[0-9a-f]+\Z")


class _Reader:
    """Field checks that name the field at fault (`predicate.<dotted path>`)."""

    def __init__(self, source: str | Path | None) -> None:
        self.source = source

    def fail(self, message: str, where: str) -> MalformedDocumentError:
        return MalformedDocumentError(message, path=self.source, field=where or "predicate")

    def object(
        self, value: Any, where: str, known: Collection[str], required: Collection[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail("expected an object", where)
        unknown = sorted(value.keys() - set(known))
        if unknown:
            raise self.fail("unknown field", _join(where, unknown[0]))
        for name in required:
            if name not in value:
                raise self.fail("required field is missing", _join(where, name))
        return value

    def optional(
        self, data: Mapping[str, Any], name: str, where: str, check: Callable[[Any, str], T]
    ) -> T | None:
        return check(data[name], _join(where, name)) if name in data else None

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail("expected a string", where)
        return value

    def name(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail("expected a non-empty string", where)
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail("expected true or false", where)
        return value

    def count(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail("expected a non-negative integer (at most 2**53 - 1)", where)
        if not 0 <= value <= MAX_SAFE_INTEGER:
            raise self.fail("expected a non-negative integer (at most 2**53 - 1)", where)
        return value

    def optional_count(self, value: Any, where: str) -> int | None:
        return None if value is None else self.count(value, where)

    def rate(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self.fail("expected a rate between 0 and 1", where)
        return value

    def timestamp(self, value: Any, where: str) -> str:
        if not is_rfc3339_timestamp(value):
            raise self.fail("expected an RFC 3339 timestamp", where)
        return str(value)

    def optional_timestamp(self, value: Any, where: str) -> str | None:
        return None if value is None else self.timestamp(value, where)

    def choice(self, value: Any, where: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(f"expected one of {', '.join(choices)}", where)
        return str(value)

    def digest_set(self, value: Any, where: str) -> dict[str, str]:
        """An in-toto DigestSet: algorithm → lowercase hex, sha256 of 64 digits."""
        if not isinstance(value, dict) or not value:
            raise self.fail("expected a digest set such as {sha256: <hex>}", where)
        for algorithm, digest in value.items():
            if not _DIGEST_NAME_RE.match(algorithm):
                raise self.fail("expected an algorithm name", _join(where, algorithm))
            pattern = SHA256_HEX_RE if algorithm == "sha256" else _HEX_RE
            if not isinstance(digest, str) or not pattern.match(digest):
                raise self.fail("expected lowercase hex digits", _join(where, algorithm))
        return dict(value)

    def items(self, value: Any, where: str, check: Callable[[Any, str], T]) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise self.fail("expected a list", where)
        return tuple(check(item, f"{where}[{index}]") for index, item in enumerate(value))

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        return self.items(value, where, self.string)

    def json_object(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail("expected an object", where)
        return value

    def symbol(self, value: Any, where: str) -> str | Mapping[str, Any]:
        if not isinstance(value, str | dict):
            raise self.fail("expected a symbol name or an object describing it", where)
        return value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _put(out: dict[str, Any], name: str, value: Any) -> None:
    """Optional fields are written only when present (None: absent)."""
    if value is not None:
        out[name] = value


@dataclass(frozen=True)
class Verifier:
    id: str
    version: str

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> Verifier:
        data = r.object(value, where, ("id", "version"), ("id", "version"))
        return cls(r.name(data["id"], where + ".id"), r.name(data["version"], where + ".version"))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version}


@dataclass(frozen=True)
class Signer:
    keyid: str
    fingerprint: str
    roles: tuple[str, ...] | None = None

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> Signer:
        data = r.object(value, where, ("keyid", "fingerprint", "roles"), ("keyid", "fingerprint"))
        return cls(
            r.string(data["keyid"], where + ".keyid"),
            r.string(data["fingerprint"], where + ".fingerprint"),
            r.optional(data, "roles", where, r.strings),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"keyid": self.keyid, "fingerprint": self.fingerprint}
        _put(out, "roles", None if self.roles is None else list(self.roles))
        return out


@dataclass(frozen=True)
class Attestation:
    """The policy, or one attestation the verdict rests on: by digest, with who signed it."""

    digest: Mapping[str, str]
    uri: str | None = None
    role: str | None = None
    signers: tuple[Signer, ...] | None = None

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> Attestation:
        data = r.object(value, where, ("uri", "digest", "role", "signers"), ("digest",))
        return cls(
            r.digest_set(data["digest"], where + ".digest"),
            r.optional(data, "uri", where, r.string),
            r.optional(data, "role", where, r.string),
            r.optional(
                data,
                "signers",
                where,
                lambda v, w: r.items(v, w, lambda s, x: Signer.read(r, s, x)),
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _put(out, "uri", self.uri)
        out["digest"] = dict(self.digest)
        _put(out, "role", self.role)
        if self.signers is not None:
            out["signers"] = [signer.to_dict() for signer in self.signers]
        return out


@dataclass(frozen=True)
class Window:
    start: str | None  # "from" in the document
    end: str | None  # "to"

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> Window:
        data = r.object(value, where, ("from", "to"), ("from", "to"))
        return cls(
            r.optional_timestamp(data["from"], where + ".from"),
            r.optional_timestamp(data["to"], where + ".to"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.start, "to": self.end}


@dataclass(frozen=True)
class PathResult:
    path_id: str
    status: str
    tag: str | None = None
    priority: int | None = None
    optional: bool | None = None
    observed_nodes: int | None = None
    total_nodes: int | None = None
    confidence: float | None = None
    # Each node as the engine reports it (the map's node, observed or not, counts, probe types).
    nodes: tuple[Mapping[str, Any], ...] | None = None

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> PathResult:
        data = r.object(value, where, _PATH_FIELDS, ("path_id", "status"))
        return cls(
            path_id=r.string(data["path_id"], where + ".path_id"),
            status=r.choice(data["status"], where + ".status", PATH_STATUSES),
            tag=r.optional(data, "tag", where, r.string),
            priority=r.optional(data, "priority", where, r.count),
            optional=r.optional(data, "optional", where, r.boolean),
            observed_nodes=r.optional(data, "observed_nodes", where, r.count),
            total_nodes=r.optional(data, "total_nodes", where, r.count),
            confidence=r.optional(data, "confidence", where, r.rate),
            nodes=r.optional(data, "nodes", where, lambda v, w: r.items(v, w, r.json_object)),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path_id": self.path_id}
        _put(out, "tag", self.tag)
        _put(out, "priority", self.priority)
        _put(out, "optional", self.optional)
        out["status"] = self.status
        _put(out, "observed_nodes", self.observed_nodes)
        _put(out, "total_nodes", self.total_nodes)
        _put(out, "confidence", self.confidence)
        if self.nodes is not None:
            out["nodes"] = [dict(node) for node in self.nodes]
        return out


_PATH_FIELDS: Final = (
    "path_id",
    "tag",
    "priority",
    "optional",
    "status",
    "observed_nodes",
    "total_nodes",
    "confidence",
    "nodes",
)
_TAG_FIELDS: Final = (
    "observation_rate",
    "target_rate",
    "verified",
    "required_paths",
    "observed_paths",
    "partial_paths",
    "missing_paths",
    "optional_paths",
    "optional_observed_paths",
)


@dataclass(frozen=True)
class TagResult:
    observation_rate: float | None = None
    target_rate: float | None = None
    verified: bool | None = None
    # The tag's paths by outcome (optional paths count apart).
    required_paths: int | None = None
    observed_paths: int | None = None
    partial_paths: int | None = None
    missing_paths: int | None = None
    optional_paths: int | None = None
    optional_observed_paths: int | None = None

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> TagResult:
        data = r.object(value, where, _TAG_FIELDS)
        return cls(
            r.optional(data, "observation_rate", where, r.rate),
            r.optional(data, "target_rate", where, r.rate),
            r.optional(data, "verified", where, r.boolean),
            *(r.optional(data, name, where, r.count) for name in _TAG_FIELDS[3:]),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _TAG_FIELDS:
            _put(out, name, getattr(self, name))
        return out


_CHAIN_REQUIRED: Final = ("chain_id", "chunks", "gaps", "final_seal_present", "events_lost")
_CHAIN_DETAIL: Final = (
    "records",
    "first_sequence",
    "last_sequence",
    "loss",
    "first_observed_at",
    "last_observed_at",
    "signers",
    "findings",
)


@dataclass(frozen=True)
class ChainEvidence:
    """One evidence chain as verified. The detail (records to findings) is written by the bundle
    verifier as a whole: all of it or none."""

    chain_id: str
    chunks: int
    gaps: tuple[Mapping[str, Any], ...]  # {missing_from, missing_to} of each gap
    final_seal_present: bool
    events_lost: int
    detail: ChainDetail | None = None

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> ChainEvidence:
        data = r.object(value, where, (*_CHAIN_REQUIRED, *_CHAIN_DETAIL), _CHAIN_REQUIRED)
        detail = None
        if any(name in data for name in _CHAIN_DETAIL):
            detail = ChainDetail.read(r, data, where)
        return cls(
            chain_id=r.string(data["chain_id"], where + ".chain_id"),
            chunks=r.count(data["chunks"], where + ".chunks"),
            gaps=r.items(data["gaps"], where + ".gaps", r.json_object),
            final_seal_present=r.boolean(data["final_seal_present"], where + ".final_seal_present"),
            events_lost=r.count(data["events_lost"], where + ".events_lost"),
            detail=detail,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chain_id": self.chain_id,
            "chunks": self.chunks,
            "gaps": [dict(gap) for gap in self.gaps],
            "final_seal_present": self.final_seal_present,
            "events_lost": self.events_lost,
        }
        if self.detail is not None:
            out.update(self.detail.to_dict())
        return out


@dataclass(frozen=True)
class ChainDetail:
    records: int
    first_sequence: int | None
    last_sequence: int | None
    loss: Mapping[str, int]
    first_observed_at: str | None
    last_observed_at: str | None
    signers: tuple[Signer, ...]
    findings: tuple[Mapping[str, Any], ...]

    @classmethod
    def read(cls, r: _Reader, data: dict[str, Any], where: str) -> ChainDetail:
        for name in _CHAIN_DETAIL:
            if name not in data:
                raise r.fail(
                    "required field is missing (with the chain's detail)", _join(where, name)
                )
        loss = r.json_object(data["loss"], where + ".loss")
        counts = {name: r.count(count, f"{where}.loss.{name}") for name, count in loss.items()}
        return cls(
            records=r.count(data["records"], where + ".records"),
            first_sequence=r.optional_count(data["first_sequence"], where + ".first_sequence"),
            last_sequence=r.optional_count(data["last_sequence"], where + ".last_sequence"),
            loss=counts,
            first_observed_at=r.optional_timestamp(
                data["first_observed_at"], where + ".first_observed_at"
            ),
            last_observed_at=r.optional_timestamp(
                data["last_observed_at"], where + ".last_observed_at"
            ),
            signers=r.items(data["signers"], where + ".signers", lambda s, x: Signer.read(r, s, x)),
            findings=r.items(data["findings"], where + ".findings", r.json_object),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "loss": dict(self.loss),
            "first_observed_at": self.first_observed_at,
            "last_observed_at": self.last_observed_at,
            "signers": [signer.to_dict() for signer in self.signers],
            "findings": [dict(finding) for finding in self.findings],
        }


@dataclass(frozen=True)
class Step:
    """One step of the offline pipeline: its outcome, and for a failure what was raised."""

    name: str
    status: str
    title: str | None = None
    message: str | None = None
    error_type: str | None = None
    exit_code: int | None = None

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> Step:
        data = r.object(value, where, _STEP_FIELDS, ("name", "status"))
        return cls(
            r.name(data["name"], where + ".name"),
            r.choice(data["status"], where + ".status", STEP_STATUSES),
            r.optional(data, "title", where, r.string),
            r.optional(data, "message", where, r.string),
            r.optional(data, "error_type", where, r.string),
            r.optional(data, "exit_code", where, r.count),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        for name in _STEP_FIELDS[2:]:
            _put(out, name, getattr(self, name))
        return out


_STEP_FIELDS: Final = ("name", "status", "title", "message", "error_type", "exit_code")


@dataclass(frozen=True)
class ScopeResult:
    declared: Mapping[str, str] | None
    records_in_scope: int
    records_out_of_scope: int
    findings: tuple[str, ...]

    @classmethod
    def read(cls, r: _Reader, value: Any, where: str) -> ScopeResult:
        names = ("declared", "records_in_scope", "records_out_of_scope", "findings")
        data = r.object(value, where, names, names)
        declared = data["declared"]
        if declared is not None:
            declared = r.json_object(declared, where + ".declared")
            for key, selector in declared.items():
                r.string(selector, f"{where}.declared.{key}")
        return cls(
            declared,
            r.count(data["records_in_scope"], where + ".records_in_scope"),
            r.count(data["records_out_of_scope"], where + ".records_out_of_scope"),
            r.strings(data["findings"], where + ".findings"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "declared": None if self.declared is None else dict(self.declared),
            "records_in_scope": self.records_in_scope,
            "records_out_of_scope": self.records_out_of_scope,
            "findings": list(self.findings),
        }


@dataclass(frozen=True)
class VerificationReport:
    verifier: Verifier
    time_verified: str
    resource_uri: str
    policy: Attestation
    input_attestations: tuple[Attestation, ...]
    verification_result: str  # PASSED or FAILED
    verified: bool
    observation_rate: float
    target_rate: float
    confidence: float
    per_path_breakdown: tuple[PathResult, ...]
    per_tag: Mapping[str, TagResult]
    unexpected_symbols: tuple[str | Mapping[str, Any], ...]
    missing_symbols: tuple[str | Mapping[str, Any], ...]
    evidence: tuple[ChainEvidence, ...]
    resource_digest: Mapping[str, str] | None = None
    service: str | None = None
    window: Window | None = None
    confidence_detail: Mapping[str, Any] | None = None
    diagnoses: tuple[Mapping[str, Any], ...] | None = None
    records: Mapping[str, int] | None = None
    failures: tuple[str, ...] | None = None
    scope: ScopeResult | None = None
    warnings: tuple[str, ...] | None = None
    steps: tuple[Step, ...] | None = None

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> VerificationReport:
        """Strict parse; MalformedDocumentError names the field at fault."""
        r = _Reader(source)
        d = r.object(data, "", _REPORT_FIELDS, _REPORT_REQUIRED)
        symbols = r.symbol
        return cls(
            verifier=Verifier.read(r, d["verifier"], "verifier"),
            time_verified=r.timestamp(d["time_verified"], "time_verified"),
            resource_uri=r.name(d["resource_uri"], "resource_uri"),
            policy=Attestation.read(r, d["policy"], "policy"),
            input_attestations=r.items(
                d["input_attestations"],
                "input_attestations",
                lambda v, w: Attestation.read(r, v, w),
            ),
            verification_result=r.choice(d["verification_result"], "verification_result", RESULTS),
            verified=r.boolean(d["verified"], "verified"),
            observation_rate=r.rate(d["observation_rate"], "observation_rate"),
            target_rate=r.rate(d["target_rate"], "target_rate"),
            confidence=r.rate(d["confidence"], "confidence"),
            per_path_breakdown=r.items(
                d["per_path_breakdown"], "per_path_breakdown", lambda v, w: PathResult.read(r, v, w)
            ),
            per_tag={
                tag: TagResult.read(r, values, f"per_tag.{tag}")
                for tag, values in r.json_object(d["per_tag"], "per_tag").items()
            },
            unexpected_symbols=r.items(d["unexpected_symbols"], "unexpected_symbols", symbols),
            missing_symbols=r.items(d["missing_symbols"], "missing_symbols", symbols),
            evidence=r.items(d["evidence"], "evidence", lambda v, w: ChainEvidence.read(r, v, w)),
            resource_digest=r.optional(d, "resource_digest", "", r.digest_set),
            service=r.optional(d, "service", "", r.string),
            window=r.optional(d, "window", "", lambda v, w: Window.read(r, v, w)),
            confidence_detail=r.optional(d, "confidence_detail", "", r.json_object),
            diagnoses=r.optional(d, "diagnoses", "", lambda v, w: r.items(v, w, _diagnosis(r))),
            records=r.optional(d, "records", "", lambda v, w: _counts(r, v, w)),
            failures=r.optional(d, "failures", "", r.strings),
            scope=r.optional(d, "scope", "", lambda v, w: ScopeResult.read(r, v, w)),
            warnings=r.optional(d, "warnings", "", r.strings),
            steps=r.optional(
                d, "steps", "", lambda v, w: r.items(v, w, lambda s, x: Step.read(r, s, x))
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verifier": self.verifier.to_dict(),
            "time_verified": self.time_verified,
            "resource_uri": self.resource_uri,
        }
        _put(
            out,
            "resource_digest",
            None if self.resource_digest is None else dict(self.resource_digest),
        )
        out["policy"] = self.policy.to_dict()
        out["input_attestations"] = [item.to_dict() for item in self.input_attestations]
        out["verification_result"] = self.verification_result
        out["verified"] = self.verified
        _put(out, "service", self.service)
        _put(out, "window", None if self.window is None else self.window.to_dict())
        out["observation_rate"] = self.observation_rate
        out["target_rate"] = self.target_rate
        out["confidence"] = self.confidence
        out["per_path_breakdown"] = [path.to_dict() for path in self.per_path_breakdown]
        out["per_tag"] = {tag: result.to_dict() for tag, result in self.per_tag.items()}
        out["unexpected_symbols"] = [_plain(s) for s in self.unexpected_symbols]
        out["missing_symbols"] = [_plain(s) for s in self.missing_symbols]
        out["evidence"] = [chain.to_dict() for chain in self.evidence]
        if self.confidence_detail is not None:
            out["confidence_detail"] = dict(self.confidence_detail)
        if self.diagnoses is not None:
            out["diagnoses"] = [dict(item) for item in self.diagnoses]
        _put(out, "records", None if self.records is None else dict(self.records))
        _put(out, "failures", None if self.failures is None else list(self.failures))
        _put(out, "scope", None if self.scope is None else self.scope.to_dict())
        _put(out, "warnings", None if self.warnings is None else list(self.warnings))
        if self.steps is not None:
            out["steps"] = [step.to_dict() for step in self.steps]
        return out


_REPORT_REQUIRED: Final = (
    "verifier",
    "time_verified",
    "resource_uri",
    "policy",
    "input_attestations",
    "verification_result",
    "verified",
    "observation_rate",
    "target_rate",
    "per_path_breakdown",
    "per_tag",
    "unexpected_symbols",
    "missing_symbols",
    "confidence",
    "evidence",
)
_REPORT_FIELDS: Final = (
    *_REPORT_REQUIRED,
    "resource_digest",
    "service",
    "window",
    "confidence_detail",
    "diagnoses",
    "records",
    "failures",
    "scope",
    "warnings",
    "steps",
)


def _plain(symbol: str | Mapping[str, Any]) -> str | dict[str, Any]:
    return symbol if isinstance(symbol, str) else dict(symbol)


def _counts(r: _Reader, value: Any, where: str) -> dict[str, int]:
    data = r.json_object(value, where)
    return {name: r.count(count, f"{where}.{name}") for name, count in data.items()}


def _diagnosis(r: _Reader) -> Callable[[Any, str], Mapping[str, Any]]:
    def read(value: Any, where: str) -> Mapping[str, Any]:
        data = r.json_object(value, where)
        for name in ("diagnosis", "expected", "observed"):
            if name not in data:
                raise r.fail("required field is missing", f"{where}.{name}")
        r.choice(data["diagnosis"], where + ".diagnosis", DIAGNOSES)
        r.json_object(data["expected"], where + ".expected")
        r.json_object(data["observed"], where + ".observed")
        return data

    return read
