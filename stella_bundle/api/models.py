"""Request and response bodies of the API, as pydantic models (they make the OpenAPI document).

Reports and records are the library's own dictionaries (their JSON Schemas are in schemas/):
the API passes them through, so the API and the CLI print the same documents.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Generic, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType
from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, WrapValidator

from ..coverage import VerifyOptions
from ..coverage.fastdecode import (
    DecodedRecords,
    LightRecord,
    PlainRecord,
    Record,
    decode_records,
)
from ..coverage.scan import ScannedRecords, records_scanned, scan_records
from ..errors import MalformedDocumentError
from ..formats.record import PROBE_TYPES
from ..formats.seal import MAX_SEQUENCE
from ..jsonio import refuse_repeated_outer_keys
from ..timeutil import parse_time_field

# A function map id: its digest, `sha256:<hex>` (the bare hex is accepted too).
DIGEST_PATTERN = r"^(sha256:)?[0-9a-f]{64}$"
CHAIN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
BASE64_PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"
# How an error in a request's body names where it is.
BODY_SOURCE: Final = "<request body>"
# Times are RFC 3339 strings, parsed by the CLI's own rule (timeutil), not pydantic's.
DATE_TIME: dict[str, Any] = {"format": "date-time"}


class ErrorBody(BaseModel):
    detail: str = Field(description="One line: what was refused and why.")


class FunctionMapSummary(BaseModel):
    digest: str = Field(description="sha256:<hex> of the in-toto Statement bytes: the map's id.")
    service: str
    signed: bool = Field(description="Posted as a DSSE envelope.")
    signature_checked: bool = Field(
        description="The envelope was verified against the server's trust root (function-map role)."
    )
    signers: list[str] = Field(description="Key ids of the trusted keys that signed it.")
    stored_at: str


class FunctionMapStored(FunctionMapSummary):
    created: bool = Field(description="False when this digest was stored already.")


class FunctionMapList(BaseModel):
    function_maps: list[FunctionMapSummary]


class FunctionMapDocument(BaseModel):
    summary: FunctionMapSummary
    statement: dict[str, Any] = Field(description="The in-toto Statement (the function map).")
    envelope: dict[str, Any] | None = Field(description="The DSSE envelope, when signed.")


def _records_as_parsed(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A JSON list of objects is taken as parsed, not copied object by object (a 1,000-record
    body: a millisecond); anything else gets pydantic's own validation and errors. The records
    are checked by the verifier (`validate_record`'s rules) either way."""
    if type(value) is list and all(type(item) is dict for item in value):
        return value
    return handler(value)


class VerifyRequest(BaseModel):
    """Observations in the body, or (without them) the stored ones over a window."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    observations: Annotated[list[dict[str, Any]] | None, WrapValidator(_records_as_parsed)] = Field(
        default=None,
        description="Observation records (schemas/observation-record.schema.json); when absent, "
        "the stored observations of the window are verified.",
    )
    window_from: str | None = Field(
        default=None,
        alias="from",
        description="RFC 3339; default: the map's window.",
        json_schema_extra=DATE_TIME,
    )
    window_to: str | None = Field(
        default=None,
        alias="to",
        description="RFC 3339; default: the map's window.",
        json_schema_extra=DATE_TIME,
    )
    fail_on_unexpected: bool | None = Field(
        default=None, description="Default: the map's coverage setting."
    )
    probe_weights: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description="Confidence weight per probe type (0..1).",
        json_schema_extra={"propertyNames": {"enum": list(PROBE_TYPES)}},
    )

    def options(self) -> VerifyOptions:
        return verify_options(
            self.window_from, self.window_to, self.fail_on_unexpected, self.probe_weights
        )


def verify_options(
    window_from: str | None,
    window_to: str | None,
    fail_on_unexpected: bool | None = None,
    probe_weights: dict[str, float] | None = None,
) -> VerifyOptions:
    return VerifyOptions(
        window_from=parse_time_field(window_from, "from"),
        window_to=parse_time_field(window_to, "to"),
        fail_on_unexpected=fail_on_unexpected,
        probe_weights=dict(probe_weights or {}),
    )


R = TypeVar("R", Record, PlainRecord, LightRecord)


class TypedVerifyBody(
    msgspec.Struct,
    Generic[R],
    forbid_unknown_fields=True,
    rename={"window_from": "from", "window_to": "to"},
):
    """`VerifyRequest` as msgspec decodes it from the bytes in one pass, the records as
    `Record`s (no dict per record, no second pass to convert them). Accepts a subset of what
    `VerifyRequest` accepts (no `window_from` spelling, no lax coercions), with the same
    values; the rest takes FastAPI's path, which answers it as before. Decoded with
    the smallest record type that takes every record (`LightRecord`, the commonest collector
    line, then `PlainRecord`: fewer checks left), else with `Record`s."""

    observations: list[R] | UnsetType | None = UNSET
    window_from: str | UnsetType | None = UNSET
    window_to: str | UnsetType | None = UNSET
    fail_on_unexpected: bool | UnsetType | None = UNSET
    probe_weights: dict[str, Annotated[float, Meta(ge=0, le=1)]] | UnsetType = UNSET

    def records(self) -> DecodedRecords | None:
        """The observations, or None: verify the stored ones of the window."""
        return DecodedRecords(self.observations) if isinstance(self.observations, list) else None

    def options(self) -> VerifyOptions:
        """`VerifyRequest`'s options, absent fields as their defaults."""
        return verify_options(
            _given(self.window_from),
            _given(self.window_to),
            _given(self.fail_on_unexpected),
            _given(self.probe_weights),
        )


T = TypeVar("T")


def _given(value: T | UnsetType) -> T | None:
    return None if value is UNSET else value  # type: ignore[return-value]


_VERIFY_BODIES: Final = (
    msgspec.json.Decoder(TypedVerifyBody[LightRecord]),
    msgspec.json.Decoder(TypedVerifyBody[PlainRecord]),
    msgspec.json.Decoder(TypedVerifyBody[Record]),
)


_JSON_SPACE: Final = b" \t\r\n"
# The opening of a body whose first member is the observations array (JSON's four spaces
# only: `\s` would also take \v and \f, which JSON refuses).
_OBSERVATIONS_FIRST: Final = re.compile(
    rb'[ \t\r\n]*\{[ \t\r\n]*"observations"[ \t\r\n]*:[ \t\r\n]*(?=\[)'
)


def _observations_array(raw: bytes) -> memoryview | None:
    """The array of `{"observations": [...]}` with no other member (what a collector posts):
    the bytes from the first `[` to the last `]`, which must be one JSON array for the body to
    be taken (so no other member, the same key named again included, can be there). None when
    the body has another shape."""
    opening = _OBSERVATIONS_FIRST.match(raw)
    if opening is None:
        return None
    close = raw.rfind(b"]")
    if close < opening.end() or raw[close + 1 :].strip(_JSON_SPACE) != b"}":
        return None
    return memoryview(raw)[opening.end() : close + 1]


def _only_observations(raw: bytes) -> TypedVerifyBody[Any] | None:
    """`{"observations": [...]}` and no other member, its array decoded alone; None
    otherwise."""
    array = _observations_array(raw)
    records = None if array is None else decode_records(array)
    return None if records is None else TypedVerifyBody(observations=records)


def decode_verify_body(raw: bytes) -> TypedVerifyBody[Any] | None:
    """A verify body decoded typed, or None when msgspec refuses it or its outermost object
    names a key twice (which msgspec takes, last-wins): FastAPI's path then answers it (its
    JSON parse and pydantic, which name what is wrong)."""
    only = _only_observations(raw)
    if only is not None:
        return only
    for decoder in _VERIFY_BODIES:
        try:
            body: TypedVerifyBody[Any] = decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            continue
        try:
            # Bodies with other members (a window, options): read again for their keys.
            refuse_repeated_outer_keys(raw, BODY_SOURCE)
        except MalformedDocumentError:
            return None
        return body
    return None


class _ArrayVerifyBody(TypedVerifyBody[Record]):
    """`TypedVerifyBody` with its observations left as their bytes (msgspec only finds where
    the array ends): a body with a window or options, whose array the compiled scan reads."""

    observations: msgspec.Raw = msgspec.Raw()  # type: ignore[assignment]


_ARRAY_BODY: Final = msgspec.json.Decoder(_ArrayVerifyBody)


class ScannedVerifyBody:
    """A verify body whose records the compiled scan checked from the bytes (`scan_records`),
    not decoded: `TypedVerifyBody`'s answers for it (its options those of `body`, the rest of
    the body decoded by msgspec, or the defaults)."""

    __slots__ = ("body", "observations")

    def __init__(self, observations: ScannedRecords, body: _ArrayVerifyBody | None) -> None:
        self.observations = observations
        self.body = body

    def records(self) -> ScannedRecords:
        return self.observations

    def options(self) -> VerifyOptions:
        return verify_options(None, None) if self.body is None else self.body.options()


def read_verify_body(raw: bytes) -> ScannedVerifyBody | TypedVerifyBody[Any] | None:
    """A verify body, its records scanned by the compiled scan when it takes every one, else
    as `decode_verify_body` decodes it (None: FastAPI's path answers). `{"observations":
    [...]}` alone has its array found by its shape; any other body is decoded by msgspec with
    the array left as bytes, then its outer keys checked as `decode_verify_body` checks them."""
    array = _observations_array(raw)
    if array is not None:
        scanned = scan_records(array)
        return decode_verify_body(raw) if scanned is None else ScannedVerifyBody(scanned, None)
    if not records_scanned():
        return decode_verify_body(raw)
    try:
        body = _ARRAY_BODY.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return decode_verify_body(raw)
    array = memoryview(body.observations)
    scanned = scan_records(array) if array else None
    if scanned is None:
        return decode_verify_body(raw)
    # The outer keys read without the records (json.loads of the whole body was half of such
    # a request's instructions): the array's text (its quotes unescaped: in no string) is first
    # found where the observations' value is, or an earlier observations member's, and the
    # body is read with `[]` in its place.
    at = raw.find(array)
    try:
        refuse_repeated_outer_keys(
            b"".join((raw[:at], b"[]", raw[at + len(array) :])) if at >= 0 else raw, BODY_SOURCE
        )
    except MalformedDocumentError:
        return None
    return ScannedVerifyBody(scanned, body)


class ChunkUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sequence: int = Field(ge=1, le=MAX_SEQUENCE)
    chunk: str = Field(pattern=BASE64_PATTERN, description="The chunk file (.ndjson.zst), base64.")
    seal: str = Field(
        pattern=BASE64_PATTERN,
        description="The seal file (.seal.dsse.json) exactly as written, base64.",
    )


class ChainUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain_id: str = Field(pattern=CHAIN_ID_PATTERN)
    chunks: list[ChunkUpload] = Field(min_length=1)
    prune_record: str | None = Field(
        default=None,
        pattern=BASE64_PATTERN,
        description="The chain's prune.dsse.json, base64, when its first chunks were pruned.",
    )


class EvidenceUpload(BaseModel):
    """Sealed chains (verified with the trust root, stored as signed) or plain observation
    records (stored, marked unsigned): exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    chains: list[ChainUpload] | None = Field(default=None, min_length=1)
    records: list[dict[str, Any]] | None = Field(default=None, min_length=1)


class IngestAnswer(BaseModel):
    store: str
    signed: bool = Field(description="The stored content is signed evidence.")
    chunks_stored: int
    chunks_already_stored: int
    records_stored: int
    records_dropped: int
    conflicts: list[dict[str, Any]]
    chains: list[dict[str, Any]]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    store: str
    backend: str


class RecordsAnswer(BaseModel):
    records: list[dict[str, Any]]
    truncated: bool = Field(description="More records matched than the limit.")


class SymbolsAnswer(BaseModel):
    symbols: list[dict[str, Any]]


class TimelineAnswer(BaseModel):
    events: list[dict[str, Any]]
    enabled: bool = Field(description="False when the runtime bridge is disabled.")


class HotSymbolsAnswer(BaseModel):
    symbols: list[dict[str, Any]]
    window_seconds: int | None = None
    windows: list[dict[str, Any]] | None = None
    enabled: bool


class RuntimeIngestAnswer(BaseModel):
    enabled: bool
    result: dict[str, Any]


class CoverageAnswer(BaseModel):
    function_map: FunctionMapSummary
    window: dict[str, str | None]
    verified: bool
    observation_rate: float
    target_rate: float
    per_path: list[dict[str, Any]]
    per_tag: dict[str, dict[str, Any]]
    missing_paths: list[str]
    unexpected_symbols: list[dict[str, Any]]
    trend: list[dict[str, Any]] = Field(
        description="Per consecutive window of the range: the observation rate and per-tag rates."
    )
