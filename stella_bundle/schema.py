"""The shipped JSON Schemas (draft 2020-12): loading, kind detection and validation.

Documents, in-toto statements (the predicate checked against its predicateType's schema), DSSE
envelopes (the statement inside checked too) and NDJSON files (line by line, `.zst` included).
Errors name the file, the line for NDJSON, the JSON path of the best-matching error and what was
expected.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import best_match

from .attest.statement import (
    BUNDLE_MANIFEST_PREDICATE,
    EVIDENCE_CHUNK_PREDICATE,
    FUNCTION_MAP_PREDICATE,
    STATEMENT_TYPE,
    VERIFICATION_REPORT_PREDICATE,
)
from .compression import ZSTD_MAGIC
from .errors import InputError, MalformedDocumentError, SchemaValidationError, StellaError
from .formats.flat import read_flat, read_list
from .formats.record import validate_record
from .jsonio import load_json, parse_json
from .observations.ndjson import iter_json_lines
from .timeutil import is_rfc3339_timestamp

SCHEMA_SUFFIX: Final = ".schema.json"

STATEMENT_KIND: Final = "statement"
ENVELOPE_KIND: Final = "dsse-envelope"
OBSERVATION_KIND: Final = "observation-record"
TRUST_ROOT_KIND: Final = "trust-root"

# The schema kind of each predicate type this toolkit signs.
PREDICATE_KINDS: Final[Mapping[str, str]] = {
    FUNCTION_MAP_PREDICATE: "function-map",
    EVIDENCE_CHUNK_PREDICATE: "evidence-chunk",
    BUNDLE_MANIFEST_PREDICATE: "bundle-manifest",
    VERIFICATION_REPORT_PREDICATE: "verification-report",
}

NDJSON_SUFFIXES: Final = (".ndjson", ".ndjson.zst", ".jsonl")


def _schema_files() -> dict[str, Any]:
    folder = resources.files("stella_bundle") / "schemas"
    return {
        entry.name[: -len(SCHEMA_SUFFIX)]: entry
        for entry in folder.iterdir()
        if entry.name.endswith(SCHEMA_SUFFIX)
    }


# Every `<kind>.schema.json` shipped in stella_bundle/schemas/, sorted.
KINDS: Final[tuple[str, ...]] = tuple(sorted(_schema_files()))


def _unknown_kind(kind: str) -> InputError:
    return InputError(f"unknown schema kind {kind!r}; expected one of {', '.join(KINDS)}")


def schema_text(kind: str) -> str:
    """The schema file of `kind`, as shipped."""
    entry = _schema_files().get(kind)
    if entry is None:
        raise _unknown_kind(kind)
    return str(entry.read_text(encoding="utf-8"))


@functools.cache
def load_schema(kind: str) -> Mapping[str, Any]:
    schema = json.loads(schema_text(kind))
    if not isinstance(schema, dict):
        raise MalformedDocumentError(
            "a schema must be a JSON object", path=f"{kind}{SCHEMA_SUFFIX}"
        )
    return schema


# --- the validator: draft 2020-12 with ECMA-262 regexes and JSON's integers ----------------------


@functools.cache
def _python_regex(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 pattern with its meaning: `$` is the end of input (in Python it also
    matches before a final newline, so `sha256:…\\n` would pass) and `\\d`, `\\w` are ASCII."""
    translated = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            translated.append(char)
            escaped = False
        elif char == "\\":
            translated.append(char)
            escaped = True
        elif char == "[":
            in_class = True
            translated.append(char)
        elif char == "]":
            in_class = False
            translated.append(char)
        elif char == "$" and not in_class:
            translated.append(r"\Z")
        else:
            translated.append(char)
    return re.compile("".join(translated), re.ASCII)


def _pattern_keyword(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _python_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_json_integer(_checker: Any, instance: Any) -> bool:
    # Draft 2020-12 counts 1.0 as an integer; our formats (observation records above all) are
    # float-free, and a parsed 1.0 is a float that canonical JSON would silently turn into 1.
    return isinstance(instance, int) and not isinstance(instance, bool)


_StellaValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={"pattern": _pattern_keyword},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_json_integer),
)

_FORMAT_CHECKER = FormatChecker(formats=())
_FORMAT_CHECKER.checks("date-time")(
    lambda value: not isinstance(value, str) or is_rfc3339_timestamp(value)
)


def _inline_local_refs(schema: Mapping[str, Any]) -> Any:
    """The schema with every acyclic `#/$defs/NAME` reference replaced by its target.

    Same meaning (a 2020-12 `$ref` applies its target alongside its siblings, as `allOf` does),
    but validation skips the reference resolver, which is most of jsonschema's cost per record.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        name = (
            ref[len("#/$defs/") :] if isinstance(ref, str) and ref.startswith("#/$defs/") else None
        )
        if name is None or name not in defs or name in seen:
            return {key: walk(value, seen) for key, value in node.items()}
        target = walk(defs[name], seen | {name})
        siblings = {key: walk(value, seen) for key, value in node.items() if key != "$ref"}
        if set(siblings) <= {"description", "default"}:
            return {**target, **siblings}
        return {**siblings, "allOf": [target]}

    return walk(schema, frozenset())


@functools.cache
def validator_for(kind: str) -> Any:
    """The compiled validator of `kind` (cached)."""
    return _StellaValidator(_inline_local_refs(load_schema(kind)), format_checker=_FORMAT_CHECKER)


# --- error messages ------------------------------------------------------------------------------

TIMESTAMP_HINT: Final = "an RFC 3339 timestamp such as 2026-01-23T00:00:00.000000Z"

# What a pattern means, for the patterns the shipped schemas use.
_PATTERN_HINTS: Final[Mapping[str, str]] = {
    "^sha256:[0-9a-f]{64}$": "'sha256:' followed by 64 lowercase hex digits",
    "^[0-9a-f]{64}$": "64 lowercase hex digits (a sha256)",
    "^[A-Za-z0-9+/_-]*={0,2}$": "base64 text",
    "^pkg:[A-Za-z][A-Za-z0-9.+-]*/": "a package URL (pkg:TYPE/NAMESPACE/NAME@VERSION)",
    "^[a-z][a-z0-9_-]*$": "a lowercase tag name (crypto, auth, net, file, general…)",
    "^/": "an absolute path",
    "^[A-Za-z0-9:_.\\\\@-]+\\.(service|scope|slice)$": (
        "a systemd unit name such as nginx.service (.service, .scope or .slice)"
    ),
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$": (
        "a safe path component (a letter or digit, then up to 127 letters, digits, '.', '_', '-')"
    ),
    "^(?!/)(?!.*/$)(?!.*(^|/)\\.{1,2}(/|$))(?!.*//)[^\\\\\\u0000]+$": (
        "a relative POSIX path (no leading or trailing '/', no '.', '..' or empty segment, "
        "no backslash or NUL)"
    ),
}

_JSON_TYPES: Final[Sequence[tuple[type, str]]] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
)


def _json_type(value: Any) -> str:
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_path(parts: Sequence[str | int]) -> str | None:
    """`expected_paths[0].nodes[1].node_hash` from jsonschema's path parts; None at the root."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _explain(error: ValidationError) -> tuple[list[str | int], str]:
    """(path of the offending field, what was expected) for one jsonschema error."""
    path: list[str | int] = list(error.absolute_path)
    keyword, instance = error.validator, error.instance
    expected: Any = error.validator_value
    if "propertyNames" in error.relative_schema_path:
        return (
            path,
            f"invalid key {_shown(instance)}: {_explain_value(keyword, expected, instance)}",
        )
    if keyword == "required" and isinstance(instance, dict):
        missing = [name for name in expected if name not in instance]
        return [*path, missing[0] if missing else "?"], "required field is missing"
    if keyword == "additionalProperties" and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = sorted(schema.get("properties", {}))
        extras = sorted(set(instance) - set(allowed))
        where = [*path, extras[0]] if extras else path
        return where, f"unknown field (allowed: {', '.join(allowed)})"
    return path, _explain_value(keyword, expected, instance, error)


def _explain_value(
    keyword: Any, expected: Any, instance: Any, error: ValidationError | None = None
) -> str:
    found = "found null" if instance is None else f"found {_json_type(instance)} {_shown(instance)}"
    explain = _EXPLAIN.get(keyword)
    text = explain(expected, instance, found) if explain is not None else None
    if text is not None:
        return text
    if keyword in _RELATIONS:
        return f"expected a number {_RELATIONS[keyword]} {expected}; {found}"
    return error.message if error is not None else f"fails {keyword} {expected!r}"


def _explain_type(expected: Any, instance: Any, found: str) -> str:
    types = [expected] if isinstance(expected, str) else list(expected)
    if isinstance(instance, float) and "integer" in types and "number" not in types:
        return f"floating-point numbers are not allowed here ({found})"
    return f"expected {' or '.join(types)}, {found}"


def _explain_pattern(expected: Any, instance: Any, found: str) -> str:
    if "T[0-9]{2}:[0-9]{2}" in expected:
        return f"expected {TIMESTAMP_HINT}; {found}"
    return f"expected {_PATTERN_HINTS.get(expected, 'a string matching ' + expected)}; {found}"


def _explain_min_items(expected: Any, instance: Any, found: str) -> str:
    return f"expected at least {expected} item{'s' if expected != 1 else ''}; {found}"


# What each keyword's failure means in words (None: say what jsonschema says).
_EXPLAIN: Final[Mapping[str, Callable[[Any, Any, str], str | None]]] = {
    "type": _explain_type,
    "enum": lambda expected, _, found: (
        f"expected one of {', '.join(_shown(v) for v in expected)}; {found}"
    ),
    "const": lambda expected, _, found: f"expected {_shown(expected)}; {found}",
    "format": lambda expected, _, found: (
        f"expected {TIMESTAMP_HINT}; {found}" if expected == "date-time" else None
    ),
    "pattern": _explain_pattern,
    "minLength": lambda expected, _, found: "must not be empty" if expected == 1 else None,
    "minItems": _explain_min_items,
    "oneOf": lambda expected, _, found: f"matches none of the allowed forms; {found}",
    "anyOf": lambda expected, _, found: f"matches none of the allowed forms; {found}",
}
_RELATIONS: Final = {
    "minimum": ">=",
    "exclusiveMinimum": ">",
    "maximum": "<=",
    "exclusiveMaximum": "<",
}


def _check(
    kind: str,
    document: Any,
    source: str | Path | None,
    line: int | None,
    prefix: Sequence[str | int] = (),
) -> None:
    try:
        error = best_match(validator_for(kind).iter_errors(document))
        if error is None:
            return
        path, message = _explain(error)
    except RecursionError:
        # Hostile nesting exhausts jsonschema's recursion (and repr of the instance).
        raise SchemaValidationError(
            f"not a valid {kind}: nested too deeply to validate",
            path=source,
            line=line,
            field=json_path(prefix),
        ) from None
    raise SchemaValidationError(
        f"not a valid {kind}: {message}",
        path=source,
        line=line,
        field=json_path([*prefix, *path]),
    )


# --- kinds ---------------------------------------------------------------------------------------


def kind_for_predicate_type(predicate_type: Any) -> str | None:
    """The schema kind of a stella predicate type; None for types this toolkit does not define."""
    return PREDICATE_KINDS.get(predicate_type) if isinstance(predicate_type, str) else None


def is_statement(document: Any) -> bool:
    return isinstance(document, dict) and document.get("_type") == STATEMENT_TYPE


def is_envelope(document: Any) -> bool:
    return (
        isinstance(document, dict) and {"payload", "payloadType", "signatures"} <= document.keys()
    )


def detect_kind(document: Any) -> str:
    """The schema kind of a document.

    A statement gives the kind of its predicateType (or `statement` for a foreign type); a
    bare predicate is recognised by its characteristic fields. Raises MalformedDocumentError
    when the kind cannot be told.
    """
    # Imported here: the trust root's model pulls in securesystemslib (≈0.05 s), which the
    # function-map schema check of every `function-map verify` does not need.
    from .formats.trust_root import TRUST_ROOT_TYPE

    if isinstance(document, dict):
        if is_envelope(document):
            return ENVELOPE_KIND
        if document.get("_type") == TRUST_ROOT_TYPE:
            return TRUST_ROOT_KIND
        if is_statement(document):
            return kind_for_predicate_type(document.get("predicateType")) or STATEMENT_KIND
        keys = document.keys()
        if "expected_paths" in keys:
            return "function-map"
        if {"chain_id", "sequence", "content"} <= keys:
            return "evidence-chunk"
        if {"chain_id", "removed", "last_removed_seal"} <= keys:
            return "evidence-prune"
        if "verification_result" in keys:
            return "verification-report"
        if {"node_hash", "function_name"} <= keys:
            return OBSERVATION_KIND
        if "files" in keys and isinstance(document["files"], list):
            return "bundle-manifest"
    raise MalformedDocumentError(
        "cannot tell which kind of document this is; name it (stella schema validate --kind) "
        f"(one of {', '.join(KINDS)})"
    )


# --- validation ----------------------------------------------------------------------------------


def validate_document(
    kind: str,
    document: Any,
    source: str | Path | None = None,
    *,
    line: int | None = None,
) -> None:
    """Validate `document` as `kind`; raise SchemaValidationError naming file, line and field.

    For a predicate kind, `document` may be the bare predicate or a whole in-toto Statement
    (whose predicateType must match the kind). For `statement`, the predicate is also checked
    when its predicateType is one of this toolkit's.
    """
    if kind not in KINDS:
        raise _unknown_kind(kind)
    if kind == STATEMENT_KIND or (kind in PREDICATE_KINDS.values() and is_statement(document)):
        _validate_statement(
            document, source, line, expected_kind=None if kind == STATEMENT_KIND else kind
        )
        return
    _check(kind, document, source, line)


def _validate_statement(
    statement: Any,
    source: str | Path | None,
    line: int | None,
    expected_kind: str | None,
    prefix: Sequence[str | int] = (),
) -> str:
    """Check the statement shape and its predicate; return the predicate's kind (or `statement`)."""
    _check(STATEMENT_KIND, statement, source, line, prefix)
    predicate_type = statement["predicateType"]
    kind = kind_for_predicate_type(predicate_type)
    if expected_kind is not None and kind != expected_kind:
        wanted = [t for t, k in PREDICATE_KINDS.items() if k == expected_kind]
        raise SchemaValidationError(
            f"predicateType is {predicate_type!r}, expected {wanted[0]!r} for a {expected_kind}",
            path=source,
            line=line,
            field=json_path([*prefix, "predicateType"]),
        )
    if kind is None:
        return STATEMENT_KIND
    _check(kind, statement["predicate"], source, line, [*prefix, "predicate"])
    return kind


@dataclass(frozen=True)
class ValidationResult:
    """What `validate_file` found valid."""

    path: str
    kind: str
    container: str  # "json", "ndjson", "statement" or "dsse-envelope"
    documents: int
    predicate_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": True,
            "path": self.path,
            "kind": self.kind,
            "container": self.container,
            "documents": self.documents,
            "predicate_type": self.predicate_type,
        }


CONTAINERS: Final = ("json", "ndjson", "statement", "dsse-envelope")


@dataclass(frozen=True)
class ValidationRefusal:
    """Why `validate_file` refused a file: the error's class, its one line and where."""

    path: str
    error: str
    message: str
    line: int | None
    field: str | None

    @classmethod
    def of(cls, path: str | Path, error: StellaError) -> ValidationRefusal:
        return cls(str(path), type(error).__name__, error.describe(), error.line, error.field)

    def to_dict(self) -> dict[str, Any]:
        return {"valid": False, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SchemaValidation:
    """What `schema validate` prints: the file found valid (its kind and container), or, as
    JSON for programs, why it was refused (people read the error line on stderr)."""

    outcome: ValidationResult | ValidationRefusal

    def to_dict(self) -> dict[str, Any]:
        return self.outcome.to_dict()

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> SchemaValidation:
        if not isinstance(data, dict) or not isinstance(data.get("valid"), bool):
            raise MalformedDocumentError(
                "expected an object with valid", path=source, field="valid"
            )
        fields = {key: value for key, value in data.items() if key != "valid"}
        if not data["valid"]:
            return cls(ValidationRefusal(**read_flat(ValidationRefusal, fields, source, "refusal")))
        values = read_flat(ValidationResult, fields, source, "validation")
        if values["container"] not in CONTAINERS:
            raise MalformedDocumentError(
                f"expected one of {', '.join(CONTAINERS)}", path=source, field="container"
            )
        return cls(ValidationResult(**values))


@dataclass(frozen=True)
class SchemaEntry:
    kind: str
    file: str  # its name in stella_bundle/schemas/
    id: str
    title: str


@dataclass(frozen=True)
class SchemaCatalog:
    """What `schema list` prints: the schema kinds shipped with this toolkit."""

    schemas: tuple[SchemaEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"schemas": [dataclasses.asdict(entry) for entry in self.schemas]}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> SchemaCatalog:
        if not isinstance(data, dict) or set(data) != {"schemas"}:
            raise MalformedDocumentError("expected schemas", path=source, field="schemas")
        return cls(
            tuple(
                SchemaEntry(**read_flat(SchemaEntry, item, source, f"schemas[{index}]"))
                for index, item in enumerate(read_list(data["schemas"], source, "schemas"))
            )
        )


def schema_catalog() -> SchemaCatalog:
    """Every shipped kind, its file, $id and title."""
    entries = []
    for kind in KINDS:
        schema = load_schema(kind)
        entries.append(
            SchemaEntry(
                kind, f"{kind}{SCHEMA_SUFFIX}", schema.get("$id", ""), schema.get("title", "")
            )
        )
    return SchemaCatalog(tuple(entries))


def is_ndjson_file(path: str | Path) -> bool:
    """By name (.ndjson, .ndjson.zst, .jsonl) or by zstd magic."""
    if str(path).endswith(NDJSON_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == ZSTD_MAGIC
    except OSError:
        return False  # the JSON reader reports why the file cannot be read


def validate_ndjson(path: str | Path, kind: str = OBSERVATION_KIND) -> int:
    """Validate every line of an NDJSON file (plain or zstd); return how many were checked."""
    if kind not in KINDS:
        raise _unknown_kind(kind)
    checked = 0
    for number, value in iter_json_lines(path):
        if kind == OBSERVATION_KIND:
            _validate_record_line(value, path, number)
        else:
            validate_document(kind, value, path, line=number)
        checked += 1
    return checked


def _validate_record_line(record: Any, path: str | Path, line: int) -> None:
    """validate_record (about 30× faster than jsonschema, and proven to accept and reject the
    same records by tests/schema/test_schema_records.py); jsonschema explains a rejection."""
    try:
        validate_record(record, path, line, default_probe_type=False)
    except MalformedDocumentError as fast_error:
        validate_document(OBSERVATION_KIND, record, path, line=line)
        raise SchemaValidationError(
            fast_error.message, path=path, line=line, field=fast_error.field
        ) from None


def validate_file(path: str | Path, kind: str | None = None) -> ValidationResult:
    """Validate a file: JSON document, statement, DSSE envelope (with its statement) or NDJSON."""
    if kind is not None and kind not in KINDS:
        raise _unknown_kind(kind)
    name = str(path)
    if is_ndjson_file(path):
        ndjson_kind = kind or OBSERVATION_KIND
        return ValidationResult(name, ndjson_kind, "ndjson", validate_ndjson(path, ndjson_kind))
    document = load_json(path)
    if is_envelope(document) and kind != ENVELOPE_KIND:
        return _validate_envelope_file(name, document, kind)
    if kind is None:
        kind = detect_kind_of_file(document, name)
    validate_document(kind, document, path)
    if is_statement(document):
        return ValidationResult(name, kind, "statement", 1, document["predicateType"])
    return ValidationResult(name, kind, "json", 1)


def detect_kind_of_file(document: Any, source: str) -> str:
    try:
        return detect_kind(document)
    except MalformedDocumentError as exc:
        raise MalformedDocumentError(exc.message, path=source) from exc


def _validate_envelope_file(name: str, document: Any, kind: str | None) -> ValidationResult:
    # Imported here: DSSE pulls in securesystemslib (≈0.1 s), which the function-map schema
    # check of every `function-map verify` does not need.
    from .attest.dsse import IN_TOTO_PAYLOAD_TYPE, parse_envelope

    _check(ENVELOPE_KIND, document, name, None)
    envelope = parse_envelope(document, name)
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        if kind is not None:
            raise SchemaValidationError(
                f"payloadType is {envelope.payload_type!r}, not {IN_TOTO_PAYLOAD_TYPE!r}: "
                f"the payload cannot be a {kind}",
                path=name,
                field="payloadType",
            )
        return ValidationResult(name, ENVELOPE_KIND, "dsse-envelope", 1)
    statement = parse_json(envelope.payload, f"{name} (decoded payload)")
    if kind is not None and kind not in (STATEMENT_KIND, *PREDICATE_KINDS.values()):
        raise SchemaValidationError(
            f"a DSSE envelope carries an in-toto statement, not a {kind}",
            path=name,
            field="payload",
        )
    expected = None if kind in (None, STATEMENT_KIND) else kind
    found = _validate_statement(statement, name, None, expected, prefix=["payload"])
    return ValidationResult(name, found, "dsse-envelope", 1, statement["predicateType"])
