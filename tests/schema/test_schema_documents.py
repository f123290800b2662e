"""Every shipped schema accepts its example document and rejects mutated ones, naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from schema_examples import EXAMPLES, load_example

from stella_bundle.attest.dsse import IN_TOTO_PAYLOAD_TYPE, sign_payload, sign_statement
from stella_bundle.attest.statement import (
    EVIDENCE_CHUNK_PREDICATE,
    FUNCTION_MAP_PREDICATE,
    make_statement,
)
from stella_bundle.errors import InputError, SchemaValidationError
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.schema import (
    KINDS,
    PREDICATE_KINDS,
    load_schema,
    validate_document,
    validate_file,
    validator_for,
)

# The formats of DESIGN.md §4 plus the two wrappers; other helpers may ship more kinds.
OWN_KINDS = (
    "function-map",
    "observation-record",
    "evidence-chunk",
    "bundle-manifest",
    "verification-report",
    "trust-root",
    "statement",
    "dsse-envelope",
)
HEX64 = "ab" * 32


def test_every_format_has_a_schema_and_an_example() -> None:
    assert set(OWN_KINDS) <= set(KINDS)
    assert set(PREDICATE_KINDS.values()) <= set(KINDS)
    for kind in OWN_KINDS:
        assert (EXAMPLES / f"{kind}.json").is_file(), kind


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_draft_2020_12_with_its_id(kind: str) -> None:
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://stella.ops/schemas/{kind}.schema.json"


def test_top_level_schemas_folder_is_the_shipped_one() -> None:
    top = EXAMPLES.parents[2] / "schemas"
    for kind in KINDS:
        shipped = json.loads((top / f"{kind}.schema.json").read_text())
        assert shipped == load_schema(kind)


@pytest.mark.parametrize("kind", OWN_KINDS)
def test_example_is_valid(kind: str) -> None:
    validate_document(kind, load_example(kind), f"{kind}.json")


def _set(path: str, value: Any) -> Callable[[Any], None]:
    """A mutation that sets (or, with value DELETE, removes) the field at a dotted path."""

    def mutate(document: Any) -> None:
        *parents, last = path.split(".")
        target = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


DELETE = object()

# (kind, mutation label, mutation, field named in the error, words the message must contain)
MUTATIONS: list[tuple[str, str, Callable[[Any], None], str | None, str]] = [
    # function map
    ("function-map", "missing service", _set("service", DELETE), "service", "required"),
    ("function-map", "service wrong type", _set("service", 7), "service", "expected string"),
    (
        "function-map",
        "unknown probe type",
        _set("expected_paths.0.nodes.0.probe_types", ["uprobe", "ebpf-magic"]),
        "expected_paths[0].nodes[0].probe_types[1]",
        "expected one of",
    ),
    (
        "function-map",
        "bad node hash",
        _set("expected_paths.0.nodes.1.node_hash", "sha256:" + "AB" * 32),
        "expected_paths[0].nodes[1].node_hash",
        "64 lowercase hex",
    ),
    (
        "function-map",
        "extra field in a node",
        _set("expected_paths.0.nodes.0.weight", 1),
        "expected_paths[0].nodes[0].weight",
        "unknown field",
    ),
    ("function-map", "extra top-level field", _set("notes", "x"), "notes", "unknown field"),
    ("function-map", "empty scope", _set("scope", {}), "scope", "non-empty"),
    (
        "function-map",
        "relative executable in the scope",
        _set("scope.executable", "bin/nginx"),
        "scope.executable",
        "an absolute path",
    ),
    (
        "function-map",
        "unknown scope selector",
        _set("scope.pod", "web-0"),
        "scope.pod",
        "unknown field",
    ),
    (
        "function-map",
        "systemd unit that is not a unit",
        _set("scope", {"systemd_unit": "nginx"}),
        "scope.systemd_unit",
        "systemd unit name",
    ),
    (
        "function-map",
        "systemd unit and a container",
        _set("scope", {"systemd_unit": "nginx.service", "container_name": "web-*"}),
        "scope",
        "",
    ),
    (
        "function-map",
        "rate above 1",
        _set("coverage.min_observation_rate", 1.5),
        "coverage.min_observation_rate",
        "<= 1",
    ),
    (
        "function-map",
        "window not an integer",
        _set("coverage.window_seconds", 1800.5),
        "coverage.window_seconds",
        "floating-point",
    ),
    (
        "function-map",
        "bad timestamp",
        _set("generated_at", "yesterday"),
        "generated_at",
        "RFC 3339",
    ),
    ("function-map", "empty path", _set("expected_paths.0.nodes", []), None, "at least 1"),
    (
        "function-map",
        "purl not a purl",
        _set("expected_paths.1.nodes.0.purl", "libc6"),
        "expected_paths[1].nodes[0].purl",
        "pkg:",
    ),
    # observation record
    ("observation-record", "missing node_hash", _set("node_hash", DELETE), "node_hash", "required"),
    (
        "observation-record",
        "unknown probe type",
        _set("probe_type", "ebpf"),
        "probe_type",
        "uprobe",
    ),
    ("observation-record", "pid wrong type", _set("pid", "4242"), "pid", "expected integer"),
    ("observation-record", "float count", _set("count", 3.0), "count", "floating-point"),
    (
        "observation-record",
        "float deep in details",
        _set("details.peer", {"rtt_ms": 1.25}),
        "details.peer.rtt_ms",
        "floating-point",
    ),
    ("observation-record", "extra field", _set("cpu", 3), "cpu", "unknown field"),
    (
        "observation-record",
        "impossible date",
        _set("observed_at", "2026-02-30T00:00:00Z"),
        "observed_at",
        "RFC 3339",
    ),
    (
        "observation-record",
        "timestamp without zone",
        _set("last_observed_at", "2026-01-23T00:05:14"),
        "last_observed_at",
        "RFC 3339",
    ),
    ("observation-record", "null optional", _set("purl", None), "purl", "found null"),
    ("observation-record", "unknown kind", _set("kind", "disk"), "kind", "expected one of"),
    (
        "observation-record",
        "node hash with trailing newline",
        _set("node_hash", f"sha256:{HEX64}\n"),
        "node_hash",
        "64 lowercase hex",
    ),
    # evidence chunk seal
    ("evidence-chunk", "missing loss", _set("loss", DELETE), "loss", "required"),
    (
        "evidence-chunk",
        "prune is not a reason",
        _set("reason", "prune"),
        "reason",
        "expected one of",
    ),
    ("evidence-chunk", "sequence zero", _set("sequence", 0), "sequence", ">= 1"),
    ("evidence-chunk", "final not a bool", _set("final", "yes"), "final", "expected boolean"),
    (
        "evidence-chunk",
        "loss as float",
        _set("loss.sampled_out", 1.5),
        "loss.sampled_out",
        "floating-point",
    ),
    (
        "evidence-chunk",
        "previous digest prefixed",
        _set("previous.sha256", "sha256:" + HEX64),
        "previous.sha256",
        None,
    ),
    (
        "evidence-chunk",
        "chain id escapes its folder",
        _set("chain_id", "../etc"),
        "chain_id",
        "safe path component",
    ),
    (
        "evidence-chunk",
        "extra collector field",
        _set("collector.kernel", "6.1"),
        "collector.kernel",
        "unknown field",
    ),
    ("evidence-chunk", "bad sealed_at", _set("sealed_at", 1706000000), "sealed_at", "string"),
    # bundle manifest
    ("bundle-manifest", "missing files", _set("files", DELETE), "files", "required"),
    ("bundle-manifest", "size as string", _set("files.0.size", "2"), "files[0].size", "integer"),
    (
        "bundle-manifest",
        "path escapes",
        _set("files.0.path", "../x"),
        "files[0].path",
        "relative POSIX",
    ),
    (
        "bundle-manifest",
        "absolute path",
        _set("files.1.path", "/etc/x"),
        "files[1].path",
        "relative POSIX",
    ),
    ("bundle-manifest", "file without digest", _set("files.2.sha256", DELETE), None, "required"),
    # verification report
    ("verification-report", "missing verifier", _set("verifier", DELETE), "verifier", "required"),
    (
        "verification-report",
        "result not an enum value",
        _set("verification_result", "OK"),
        "verification_result",
        "PASSED",
    ),
    (
        "verification-report",
        "rate as string",
        _set("observation_rate", "100%"),
        "observation_rate",
        "number",
    ),
    (
        "verification-report",
        "path status unknown",
        _set("per_path_breakdown.0.status", "seen"),
        "per_path_breakdown[0].status",
        "observed",
    ),
    ("verification-report", "extra top-level", _set("score", 1), "score", "unknown field"),
    (
        "verification-report",
        "bad time",
        _set("time_verified", "2026-01-24"),
        "time_verified",
        "RFC 3339",
    ),
    # trust root
    ("trust-root", "wrong _type", _set("_type", "trust-root"), "_type", "expected"),
    ("trust-root", "missing expires", _set("expires", DELETE), "expires", "required"),
    (
        "trust-root",
        "unknown role",
        _set("roles.admin", {"keyids": [], "threshold": 1}),
        None,
        "key",
    ),
    ("trust-root", "threshold zero", _set("roles.builder.threshold", 0), None, ">= 1"),
    ("trust-root", "version as string", _set("version", "1"), "version", "integer"),
    ("trust-root", "extra field", _set("comment", "hi"), "comment", "unknown field"),
    ("trust-root", "bad expires", _set("expires", "2036-01-01"), "expires", "RFC 3339"),
    # statement and envelope
    ("statement", "wrong _type", _set("_type", "https://in-toto.io/Statement/v0.1"), "_type", ""),
    ("statement", "no subject", _set("subject", []), "subject", "at least 1"),
    ("statement", "subject without digest", _set("subject.0.digest", DELETE), None, "required"),
    (
        "statement",
        "predicate checked by its type",
        _set("predicate.coverage.window_seconds", "1800"),
        "predicate.coverage.window_seconds",
        "integer",
    ),
    ("dsse-envelope", "no signatures", _set("signatures", []), "signatures", "at least 1"),
    ("dsse-envelope", "payload not base64", _set("payload", "not base64!"), "payload", "base64"),
    (
        "dsse-envelope",
        "missing payloadType",
        _set("payloadType", DELETE),
        "payloadType",
        "required",
    ),
]


@pytest.mark.parametrize(
    ("kind", "mutate", "field", "words"),
    [pytest.param(k, m, f, w, id=f"{k}: {label}") for k, label, m, f, w in MUTATIONS],
)
def test_mutated_document_is_rejected(
    example: Callable[[str], Any],
    kind: str,
    mutate: Callable[[Any], None],
    field: str | None,
    words: str | None,
) -> None:
    document = example(kind)
    mutate(document)
    with pytest.raises(SchemaValidationError) as caught:
        validate_document(kind, document, f"{kind}.json")
    error = caught.value
    assert error.path == f"{kind}.json"
    if field is not None:
        assert error.field == field, error.describe()
    if words:
        assert words in error.message, error.describe()
    assert "\n" not in error.describe()
    assert error.exit_code == 2


def test_every_own_kind_has_mutations() -> None:
    assert {kind for kind, *_ in MUTATIONS} == set(OWN_KINDS)


def test_optional_fields_may_be_left_out(example: Callable[[str], Any]) -> None:
    record = {k: v for k, v in example("observation-record").items() if k in REQUIRED_RECORD}
    validate_document("observation-record", record)
    seal = example("evidence-chunk")
    seal["previous"] = None
    seal["window"] = {"first_observed_at": None, "last_observed_at": None}
    seal["collector"]["boot_id"] = None
    seal["collector"]["probe_set_sha256"] = None
    validate_document("evidence-chunk", seal)
    report = example("verification-report")
    for optional in ("resource_digest", "steps", "service", "window"):
        del report[optional]
    validate_document("verification-report", report)
    function_map = example("function-map")
    del function_map["hot_functions"]
    del function_map["scope"]
    del function_map["coverage"]["tag_min_rates"]
    for node in function_map["expected_paths"][0]["nodes"]:
        node.pop("binary_path")
        node.pop("probe_types")
    validate_document("function-map", function_map)


REQUIRED_RECORD = ("node_hash", "function_name", "probe_type", "observed_at")


def test_details_are_open_but_float_free(example: Callable[[str], Any]) -> None:
    record = example("observation-record")
    record["details"] = {"argv": ["/bin/sh", "-c", "id"], "fd": 3, "ok": True, "x": None}
    validate_document("observation-record", record)
    record["details"]["nested"] = {"list": [[1, 2, {"deep": 2.5}]]}
    with pytest.raises(SchemaValidationError) as caught:
        validate_document("observation-record", record)
    assert caught.value.field == "details.nested.list[0][2].deep"
    record["details"]["nested"] = {"address": 2**64}  # a raw pointer: not canonical JSON
    with pytest.raises(SchemaValidationError, match="<= 9007199254740991"):
        validate_document("observation-record", record)


def test_trust_root_schema_matches_the_model(example: Callable[[str], Any], test_keys: Any) -> None:
    document = example("trust-root")
    assert TrustRoot.from_dict(document).to_dict() == document
    # what `stella trust-root init` writes, with every role and a Sigstore section
    real = TrustRoot.load(test_keys.trust_root).to_dict()
    validate_document("trust-root", real, test_keys.trust_root)
    real["sigstore"] = {
        "trusted_root": {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"},
        "identities": [{"identity": "ci@example.com", "issuer": "https://accounts.example.com"}],
    }
    validate_document("trust-root", real)
    assert TrustRoot.from_dict(real).to_dict() == real
    real["sigstore"]["identities"][0].pop("issuer")
    with pytest.raises(SchemaValidationError) as caught:
        validate_document("trust-root", real)
    assert caught.value.field == "sigstore.identities[0].issuer"


def test_predicate_kind_accepts_the_whole_statement(example: Callable[[str], Any]) -> None:
    statement = example("statement")
    validate_document("function-map", statement)
    with pytest.raises(SchemaValidationError, match="predicateType") as caught:
        validate_document("evidence-chunk", statement)
    assert caught.value.field == "predicateType"
    statement["predicate"]["expected_paths"][0]["tag"] = "Crypto!"
    with pytest.raises(SchemaValidationError) as caught:
        validate_document("function-map", statement, "fm.json")
    assert caught.value.field == "predicate.expected_paths[0].tag"


def test_statement_of_a_foreign_type_is_checked_for_shape_only() -> None:
    statement = make_statement(
        [{"name": "a", "digest": {"sha256": HEX64}}], "https://slsa.dev/provenance/v1", {"x": 1.5}
    )
    validate_document("statement", statement)


def test_seal_statement_in_an_envelope_file(tmp_path: Any, test_keys: Any) -> None:
    seal = load_example("evidence-chunk")
    statement = make_statement(
        [{"name": "0000000002.ndjson.zst", "digest": {"sha256": HEX64}}],
        EVIDENCE_CHUNK_PREDICATE,
        seal,
    )
    envelope_path = tmp_path / "0000000002.seal.dsse.json"
    envelope = sign_statement(statement, [test_keys.signer("collector")])
    envelope_path.write_text(json.dumps(envelope.to_dict()))
    result = validate_file(envelope_path)
    assert (result.kind, result.container) == ("evidence-chunk", "dsse-envelope")
    assert result.predicate_type == EVIDENCE_CHUNK_PREDICATE

    seal["loss"]["ring_buffer_dropped"] = -1
    bad = sign_statement({**statement, "predicate": seal}, [test_keys.signer("collector")])
    envelope_path.write_text(json.dumps(bad.to_dict()))
    with pytest.raises(SchemaValidationError) as caught:
        validate_file(envelope_path)
    assert caught.value.field == "payload.predicate.loss.ring_buffer_dropped"
    assert caught.value.path == str(envelope_path)
    with pytest.raises(SchemaValidationError, match="predicateType"):
        validate_file(envelope_path, "function-map")


def test_envelope_of_another_payload_type(tmp_path: Any, test_keys: Any) -> None:
    envelope = sign_payload(
        b"hello world", "http://example.com/HelloWorld", [test_keys.signer("builder")]
    )
    path = tmp_path / "hello.dsse.json"
    path.write_text(json.dumps(envelope.to_dict()))
    assert validate_file(path).kind == "dsse-envelope"
    with pytest.raises(SchemaValidationError, match=re.escape(IN_TOTO_PAYLOAD_TYPE)):
        validate_file(path, FUNCTION_MAP_KIND)


FUNCTION_MAP_KIND = PREDICATE_KINDS[FUNCTION_MAP_PREDICATE]


def test_unknown_kind_is_a_usage_error() -> None:
    with pytest.raises(InputError, match="unknown schema kind 'nope'"):
        validate_document("nope", {})


def test_ecma_end_anchor_and_ascii_digits() -> None:
    """Python's `$` matches before a final newline and `\\d` any Unicode digit: not in schemas."""
    seal = load_example("evidence-chunk")
    for bad in ("chain-1\n", "٣chain"):
        seal["chain_id"] = bad
        with pytest.raises(SchemaValidationError):
            validate_document("evidence-chunk", seal)


@pytest.mark.parametrize("kind", KINDS)
def test_inlined_validator_schema_is_still_valid(kind: str) -> None:
    """The compiled validator inlines `$defs` references; the result must stay a valid schema."""
    schema = validator_for(kind).schema
    Draft202012Validator.check_schema(schema)
    for kind_example in (EXAMPLES / f"{kind}.json",):
        if kind_example.exists() and kind not in ("statement", "dsse-envelope"):
            assert validator_for(kind).is_valid(json.loads(kind_example.read_text()))
