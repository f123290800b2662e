"""Reading a function map from disk: `function-map.json` is the in-toto Statement (canonical
JSON); `function-map.dsse.json` is the DSSE envelope whose payload is exactly those bytes. Both
load with `load_function_map`, which checks the signature against a trust root when given one.
The predicate's model is `formats/function_map.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..attest.statement import FUNCTION_MAP_PREDICATE, validate_statement
from ..errors import MalformedDocumentError, PayloadTypeError, StatementError
from ..formats.function_map import Coverage, ExpectedNode, ExpectedPath, FunctionMap
from ..formats.roles import RoleName
from ..jsonio import parse_json, read_bytes

if TYPE_CHECKING:
    from ..formats.trust_root import TrustRoot


@dataclass(frozen=True)
class LoadedFunctionMap:
    """A function map as read from disk, with what is known about its authenticity."""

    function_map: FunctionMap
    statement: dict[str, Any]
    # sha256:<hex> of the Statement bytes as stored: the function-map.json file, or the DSSE
    # payload (the same bytes when written by `generate`). The verification report's "policy".
    digest: str
    source: str
    signed: bool  # the input was a DSSE envelope
    signature_checked: bool  # ... and it was verified against a trust root
    signers: tuple[str, ...] = ()

    # Convenience so callers may treat this like the FunctionMap itself.
    def nodes(self) -> list[ExpectedNode]:
        return self.function_map.nodes()

    @property
    def expected_paths(self) -> tuple[ExpectedPath, ...]:
        return self.function_map.expected_paths

    @property
    def coverage(self) -> Coverage:
        return self.function_map.coverage


# Above this many paths, jsonschema checks the header and the first paths only; every path is
# still checked by ExpectedPath.from_dict, which enforces the same rules (jsonschema takes ~70 µs
# per path: 0.7 s for a 10,000-path map, which would dominate verification time; 500 paths
# still took a sixth of the whole load of such a map).
SCHEMA_FULL_CHECK_PATHS = 64


def validate_predicate_schema(predicate: Mapping[str, Any], source: str | Path | None) -> None:
    """Check the predicate against schemas/function-map.schema.json."""
    from .schema_check import check_function_map_predicate

    paths = predicate.get("expected_paths")
    if isinstance(paths, list) and len(paths) > SCHEMA_FULL_CHECK_PATHS:
        predicate = {**predicate, "expected_paths": paths[:SCHEMA_FULL_CHECK_PATHS]}
    check_function_map_predicate(predicate, source)


def function_map_from_statement(
    statement: Any, source: str | Path | None, *, check_schema: bool = True
) -> FunctionMap:
    try:
        # The envelope of the statement is checked by in-toto-attestation; the predicate (which
        # its protobuf conversion would walk at ~0.2 ms per path) by our schema and from_dict.
        shell = (
            {**statement, "predicate": {"elided": True}}
            if isinstance(statement, dict)
            else statement
        )
        validate_statement(shell, FUNCTION_MAP_PREDICATE)
        if not isinstance(statement["predicate"], dict):
            raise StatementError("statement field 'predicate' must be a JSON object")
    except StatementError as exc:
        raise MalformedDocumentError(exc.message, path=source) from exc
    if check_schema:
        validate_predicate_schema(statement["predicate"], source)
    return FunctionMap.from_dict(statement["predicate"], source)


def is_envelope_document(document: Any) -> bool:
    """A parsed function-map document is a DSSE envelope (else an in-toto Statement)."""
    return isinstance(document, dict) and "payloadType" in document


def load_function_map(
    path: str | Path,
    trust_root: TrustRoot | str | Path | None = None,
    *,
    check_schema: bool = True,
) -> LoadedFunctionMap:
    """Read FM.json (a Statement) or FM.dsse.json (its DSSE envelope).

    With a trust root a DSSE input must be signed by the `function-map` role (errors are
    VerificationFailure subclasses); a bare Statement cannot satisfy a trust root and is refused.
    Without one, an envelope is read and `signature_checked` is False.
    """
    return parse_function_map(read_bytes(path), path, trust_root, check_schema=check_schema)


def parse_function_map(
    raw: bytes,
    path: str | Path,
    trust_root: TrustRoot | str | Path | None = None,
    *,
    check_schema: bool = True,
) -> LoadedFunctionMap:
    """`load_function_map` over bytes already read (a file, or a map posted to the API);
    `path` names where they came from in every message."""
    source = str(path)
    document = parse_json(raw, source)
    if isinstance(trust_root, str | Path):
        from ..formats.trust_root import TrustRoot

        trust_root = TrustRoot.load(trust_root)
    is_envelope = is_envelope_document(document)
    signers: tuple[str, ...] = ()
    if is_envelope:
        # Imported here: DSSE pulls in securesystemslib (and its AWS signer, boto3), ≈0.15 s
        # that reading a plain Statement does not need.
        from ..attest.dsse import IN_TOTO_PAYLOAD_TYPE, parse_envelope
        from ..attest.verifier import AttestationVerifier

        if trust_root is not None:
            verified = AttestationVerifier(trust_root).verify_statement(
                document, RoleName.FUNCTION_MAP, source=path, predicate_type=FUNCTION_MAP_PREDICATE
            )
            statement = verified.statement
            statement_bytes = verified.payload
            signers = tuple(key.keyid for key in verified.signers)
        else:
            envelope = parse_envelope(document, path)
            if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
                raise PayloadTypeError(
                    f"payloadType is {envelope.payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}",
                    path=path,
                )
            statement_bytes = envelope.payload
            statement = parse_json(statement_bytes, f"{source} (payload)")
    else:
        if trust_root is not None:
            raise StatementError(
                "a trust root was given but this function map is not signed; "
                "pass the .dsse.json envelope",
                path=path,
            )
        statement = document
        statement_bytes = raw
    function_map = function_map_from_statement(statement, source, check_schema=check_schema)
    return LoadedFunctionMap(
        function_map=function_map,
        statement=statement,
        digest="sha256:" + hashlib.sha256(statement_bytes).hexdigest(),
        source=source,
        signed=is_envelope,
        signature_checked=is_envelope and trust_root is not None,
        signers=signers,
    )
