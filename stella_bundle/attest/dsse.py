"""DSSE envelopes: signing with securesystemslib, strict parsing, keyid-agnostic verification.

We parse envelopes ourselves (strict base64, explicit fields, the payloadType checked by us):
`securesystemslib.dsse.Envelope.from_dict` mutates its argument and accepts loose input.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pybase64
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import Signature, Signer, SSlibKey

from ..canonical import canonical_bytes
from ..errors import (
    KeyFileError,
    MalformedDocumentError,
    SignatureError,
    StatementError,
    ThresholdNotMetError,
)
from ..formats.public_key import key_material
from ..jsonio import parse_json

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Signatures per envelope (the schema's maxItems): each is tried against every trusted key of
# the role, so an unbounded list is a CPU bomb (50,000 junk signatures cost 8 s per envelope).
MAX_SIGNATURES = 64
_ENVELOPE_FIELDS = frozenset({"payload", "payloadType", "signatures"})
_SIGNATURE_FIELDS = frozenset({"keyid", "sig"})


@dataclass(frozen=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope; `payload` is the decoded bytes that were signed."""

    payload: bytes
    payload_type: str
    signatures: tuple[EnvelopeSignature, ...]

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": pybase64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": pybase64.b64encode(s.sig).decode()}
                for s in self.signatures
            ],
        }


def envelope_bytes(envelope: Envelope) -> bytes:
    """The RFC 8785 canonical JSON of `envelope.to_dict()`, built directly.

    Same bytes as `canonical_bytes(envelope.to_dict())` (a property test proves it), ~100x
    faster on large payloads: base64 text needs no escaping, and the keys are few and fixed
    (already in RFC 8785 order: payload < payloadType < signatures, keyid < sig). The reference
    serialiser took ~20 ms per MiB of payload, more than the signature itself.
    """
    signatures = b",".join(
        b'{"keyid":' + canonical_bytes(s.keyid) + b',"sig":"' + pybase64.b64encode(s.sig) + b'"}'
        for s in envelope.signatures
    )
    # The payload's base64 in pieces of 48 KiB (whole 3-byte groups, so the pieces join into
    # the base64 of the whole): one 1.4 MB text less per MiB, whose fresh pages cost more than
    # encoding it.
    payload = memoryview(envelope.payload)
    return b"".join(
        (
            b'{"payload":"',
            *(
                pybase64.b64encode(payload[at : at + _B64_PIECE])
                for at in range(0, len(payload), _B64_PIECE)
            ),
            b'","payloadType":',
            canonical_bytes(envelope.payload_type),
            b',"signatures":[',
            signatures,
            b"]}",
        )
    )


_B64_PIECE = 3 << 14


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _b64decode(value: Any, source: str | Path | None, field: str) -> bytes:
    """Strict base64 (pybase64: SIMD, the stdlib decoder took ~4 ms per MiB)."""
    if not isinstance(value, str):
        raise MalformedDocumentError("expected a base64 string", path=source, field=field)
    try:
        return pybase64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    # DSSE verifiers MUST accept URL-safe base64 too, padded or not; one alphabet, not a mix.
    if "+" not in value and "/" not in value:
        try:
            padded = value + "=" * (-len(value) % 4)
            return pybase64.b64decode(padded, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            pass
    raise MalformedDocumentError("not valid base64", path=source, field=field)


_PAYLOAD_FIRST = b'{"payload":"'


def read_envelope(data: bytes, source: str | Path | None = None) -> Envelope:
    """`parse_envelope(parse_json(data, source), source)`: the same envelope, or the same error.

    For envelopes written as `envelope_bytes` writes them (payload first, no whitespace, no
    escapes in it) the payload is decoded from `data` in place and only the rest (a few hundred
    bytes, with the payload's string emptied) goes through `parse_json`, which refuses
    duplicate keys and everything else it refuses: for 1 MiB payloads the JSON reader's 1.4 MB
    of text and 1.4 MB payload string cost more than the signature check. When the payload's
    characters are all base64 ones the emptied document is valid JSON exactly when `data` is;
    anything else (URL-safe base64, escapes, another layout, any error) takes the full path,
    whose error names the document."""
    return _read_envelope(data, source, lambda text: parse_json(text, source or "envelope"))


def _read_envelope(
    data: bytes, source: str | Path | None, parse: Callable[[bytes], Any]
) -> Envelope:
    start = len(_PAYLOAD_FIRST)
    end = data.find(b'"', start) if data.startswith(_PAYLOAD_FIRST) else -1
    if end >= 0 and data.find(b"\\", start, end) < 0:
        try:
            rest = parse(data[:start] + data[end:])
            payload = pybase64.b64decode(memoryview(data)[start:end], validate=True)
        except (MalformedDocumentError, binascii.Error, ValueError):
            pass  # the full path decides, and words the error for the whole document
        else:
            if isinstance(rest, dict) and rest.get("payload") == "":
                return _parsed_envelope(rest, source, payload)
    return parse_envelope(parse(data), source)


def parse_envelope(document: Any, source: str | Path | None = None) -> Envelope:
    """Validate the envelope's shape and decode it; never mutates `document`."""
    return _parsed_envelope(document, source, None)


def _parsed_envelope(document: Any, source: str | Path | None, payload: bytes | None) -> Envelope:
    """parse_envelope, with the payload already decoded when `payload` is not None."""
    if not isinstance(document, dict):
        raise MalformedDocumentError("not a DSSE envelope (expected a JSON object)", path=source)
    for field in ("payload", "payloadType", "signatures"):
        if field not in document:
            raise MalformedDocumentError(
                "DSSE envelope lacks this required field", path=source, field=field
            )
    if not isinstance(document["payloadType"], str):
        raise MalformedDocumentError("expected a string", path=source, field="payloadType")
    # The schema (schemas/dsse-envelope.schema.json) is the definition: what it refuses, the
    # parser refuses, so `schema validate` and every verifier decide alike.
    _no_other_fields(document, _ENVELOPE_FIELDS, source, None)
    if payload is None:
        payload = _b64decode(document["payload"], source, "payload")
    raw_signatures = document["signatures"]
    if not isinstance(raw_signatures, list):
        raise MalformedDocumentError("expected a list", path=source, field="signatures")
    # None at all is left to the verifiers: "unsigned" is their finding (a verdict, exit 1).
    if len(raw_signatures) > MAX_SIGNATURES:
        raise MalformedDocumentError(
            f"{len(raw_signatures)} signatures; expected at most {MAX_SIGNATURES}",
            path=source,
            field="signatures",
        )
    signatures = []
    for index, item in enumerate(raw_signatures):
        where = f"signatures[{index}]"
        if not isinstance(item, dict) or "sig" not in item:
            raise MalformedDocumentError("expected an object with 'sig'", path=source, field=where)
        _no_other_fields(item, _SIGNATURE_FIELDS, source, where)
        keyid = item.get("keyid", "")
        if not isinstance(keyid, str):
            raise MalformedDocumentError("expected a string", path=source, field=where + ".keyid")
        sig = _b64decode(item["sig"], source, where + ".sig")
        if not sig:
            raise MalformedDocumentError("empty signature", path=source, field=where + ".sig")
        signatures.append(EnvelopeSignature(keyid, sig))
    return Envelope(
        payload=payload, payload_type=document["payloadType"], signatures=tuple(signatures)
    )


def _no_other_fields(
    document: dict[str, Any], allowed: frozenset[str], source: str | Path | None, where: str | None
) -> None:
    extra = sorted(str(key) for key in document if key not in allowed)
    if extra:
        raise MalformedDocumentError(
            f"unknown field {extra[0]!r} (a DSSE envelope holds only "
            + (", ".join(sorted(allowed)))
            + ")",
            path=source,
            field=where,
        )


def parse_statement_envelope(
    data: bytes,
    predicate_type: str,
    source: str | Path | None = None,
    what: str = "envelope",
) -> tuple[Envelope, dict[str, Any]]:
    """Envelope bytes → (envelope, in-toto statement of `predicate_type`), signatures unchecked.

    For documents read back from disk or an archive (seals, prune records): every shape
    problem is a MalformedDocumentError naming the file and the field.
    """
    # Local imports: statement.py pulls in protobuf, which plain DSSE users do not need.
    from .statement import validate_statement

    def parse(text: bytes) -> Any:
        try:
            return parse_json(text, what)
        except MalformedDocumentError as exc:
            raise MalformedDocumentError(
                f"{what} is not valid JSON: {exc.message}", path=source
            ) from exc

    envelope = _read_envelope(data, source, parse)
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise MalformedDocumentError(
            f"payloadType is {envelope.payload_type!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}",
            path=source,
            field="payloadType",
        )
    try:
        statement = parse_json(envelope.payload, what)
    except MalformedDocumentError as exc:
        raise MalformedDocumentError(
            f"{what} payload is not valid JSON: {exc.message}", path=source, field="payload"
        ) from exc
    try:
        validate_statement(statement, predicate_type)
    except StatementError as exc:
        raise MalformedDocumentError(exc.message, path=source, field="payload") from exc
    return envelope, statement


def sign_payload(payload: bytes, payload_type: str, signers: Sequence[Signer]) -> Envelope:
    """Sign the PAE with each signer, as securesystemslib's `dsse.Envelope.sign` does (one
    signature per keyid, the last one kept), with one PAE for all signers."""
    message = pae(payload_type, payload)
    by_keyid: dict[str, EnvelopeSignature] = {}
    for signer in signers:
        signature = signer.sign(message)
        by_keyid[signature.keyid] = EnvelopeSignature(
            signature.keyid, bytes.fromhex(signature.signature)
        )
    return Envelope(payload, payload_type, tuple(by_keyid.values()))


def sign_statement(statement: dict[str, Any], signers: Sequence[Signer]) -> Envelope:
    """Sign the RFC 8785 canonical JSON of a statement dict."""
    return sign_payload(canonical_bytes(statement), IN_TOTO_PAYLOAD_TYPE, signers)


def _signature_forms(key: SSlibKey, sig: bytes) -> tuple[bytes, ...]:
    """The encodings to try: ECDSA signatures may be DER (securesystemslib, cosign) or the raw
    32-byte r || 32-byte s that the DSSE specification's own test vector uses."""
    if key.keytype == "ecdsa" and len(sig) == 64:
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        return (sig, encode_dss_signature(r, s))
    return (sig,)


def signing_keys(envelope: Envelope, candidates: Iterable[SSlibKey]) -> list[SSlibKey]:
    """The distinct candidate keys that produced a valid signature over the envelope.

    The keyid in a signature is only a hint (DSSE: it is not authenticated), so every
    signature is tried against every candidate, matching keyids first.
    """
    message = envelope.pae()
    keys = list(candidates)
    # Keyed by key material, not keyid: one key written two ways is still one signer.
    verified: dict[bytes, SSlibKey] = {}
    for signature in envelope.signatures:
        ordered = sorted(keys, key=lambda k: k.keyid != signature.keyid)
        for key in ordered:
            try:
                material = key_material(key)
            except KeyFileError:
                continue  # a key whose material cannot be read verifies nothing
            if material in verified:
                continue
            if _verifies(key, signature.sig, message):
                verified[material] = key
                break
    return list(verified.values())


def _verifies(key: SSlibKey, sig: bytes, message: bytes) -> bool:
    for form in _signature_forms(key, sig):
        # verify_signature insists on equal keyids; the hint may legitimately differ.
        probe = Signature(keyid=key.keyid, sig=form.hex())
        try:
            key.verify_signature(probe, message)
        except (UnverifiedSignatureError, VerificationError):
            continue
        return True
    return False


def verify_envelope(
    envelope: Envelope,
    keys: Sequence[SSlibKey],
    threshold: int,
    source: str | Path | None = None,
) -> list[SSlibKey]:
    """Require `threshold` distinct keys of `keys` to have signed; return them."""
    if not envelope.signatures:
        raise SignatureError("envelope carries no signature", path=source)
    signers = signing_keys(envelope, keys)
    if not signers:
        # Keyids are unauthenticated hints: they choose the message here, never the verdict.
        known = {key.keyid for key in keys}
        claimed = [s.keyid for s in envelope.signatures if s.keyid in known]
        if claimed:
            raise SignatureError(
                f"signature by trusted key {claimed[0][:16]}… does not verify: the payload, "
                "payloadType or signature was altered after signing",
                path=source,
            )
        hints = [s.keyid[:16] for s in envelope.signatures if s.keyid]
        if not hints:
            raise SignatureError(
                "no trusted key verifies the signature (it names no keyid: wrong key, or the "
                "payload, payloadType or signature was altered)",
                path=source,
            )
        raise SignatureError(
            f"not signed by any trusted key (wrong key?): signature keyids {', '.join(hints)}",
            path=source,
        )
    if len(signers) < threshold:
        raise ThresholdNotMetError(
            f"threshold not met: {len(signers)} of {threshold} required signatures verified "
            f"(by {', '.join(k.keyid[:16] for k in signers)})",
            path=source,
        )
    return signers
