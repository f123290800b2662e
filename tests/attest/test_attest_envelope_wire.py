"""The fast envelope serialiser is byte-identical to the RFC 8785 reference; base64 is strict."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.attest.dsse import (
    Envelope,
    EnvelopeSignature,
    envelope_bytes,
    parse_envelope,
    read_envelope,
)
from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import MalformedDocumentError
from stella_bundle.jsonio import parse_json
from tests.conftest import scaled_examples

signatures = st.lists(
    st.builds(EnvelopeSignature, keyid=st.text(max_size=70), sig=st.binary(max_size=80)),
    max_size=3,
)


@settings(max_examples=scaled_examples(300), deadline=None)
@given(payload=st.binary(max_size=2048), payload_type=st.text(max_size=60), sigs=signatures)
def test_envelope_bytes_match_reference(
    payload: bytes, payload_type: str, sigs: list[EnvelopeSignature]
) -> None:
    envelope = Envelope(payload, payload_type, tuple(sigs))
    assert envelope_bytes(envelope) == canonical_bytes(envelope.to_dict())


@settings(max_examples=scaled_examples(100), deadline=None)
@given(payload=st.binary(max_size=512), sig=st.binary(min_size=1, max_size=80))
def test_round_trip_through_parse(payload: bytes, sig: bytes) -> None:
    envelope = Envelope(payload, "t", (EnvelopeSignature("k", sig),))
    import json

    assert parse_envelope(json.loads(envelope_bytes(envelope))) == envelope


def test_url_safe_and_unpadded_base64_accepted() -> None:
    raw = bytes(range(250, 256)) * 3
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert "-" in url_safe or "_" in url_safe
    document = {"payload": url_safe, "payloadType": "t", "signatures": [{"sig": url_safe}]}
    envelope = parse_envelope(document)
    assert envelope.payload == raw and envelope.signatures[0].sig == raw


@pytest.mark.parametrize("bad", ["abc$", "a b c d", "ab\ncd==", "=abc", "ab+_"])
def test_invalid_base64_is_refused(bad: str) -> None:
    document = {"payload": bad, "payloadType": "t", "signatures": []}
    with pytest.raises(MalformedDocumentError, match="not valid base64"):
        parse_envelope(document)


def _reference(data: bytes) -> object:
    """What the full path makes of envelope bytes: the envelope, or the error."""
    try:
        return parse_envelope(parse_json(data, "e.dsse.json"), "e.dsse.json")
    except MalformedDocumentError as exc:
        return type(exc).__name__, str(exc)


def _fast(data: bytes) -> object:
    try:
        return read_envelope(data, "e.dsse.json")
    except MalformedDocumentError as exc:
        return type(exc).__name__, str(exc)


# Edits of canonical envelope bytes that the payload-in-place path must not read differently:
# duplicate keys (before, after, inside the payload's object), escapes and non-base64 bytes in
# the payload, URL-safe base64, whitespace, truncation, a payload that is not a string.
EDITS = [
    lambda d: d,
    lambda d: d.replace(b'{"payload":"', b'{"payload":"","payload":"', 1),
    lambda d: d[:-1] + b',"payload":""}',
    lambda d: d[:-1] + b',"payloadType":"x"}',
    lambda d: d.replace(b'{"payload":"', b'{"payload":"\\/', 1),
    lambda d: d.replace(b'{"payload":"', b'{"payload":"A\n', 1),
    lambda d: d.replace(b'{"payload":"', b'{"payload":"\x00', 1),
    lambda d: d.replace(b'{"payload":"', b'{"payload":"\xff', 1),
    lambda d: d.replace(b'{"payload":"', b'{"payload":"=', 1),
    lambda d: d.replace(b"+", b"-").replace(b"/", b"_"),
    lambda d: d.replace(b'{"payload":"', b'{ "payload":"', 1),
    lambda d: d.replace(b'","payloadType":', b'" ,"payloadType":', 1),
    lambda d: d.replace(b'","payloadType":', b'","payloadType" :', 1),
    lambda d: d[: len(d) // 2],
    lambda d: d[:13],
    lambda d: d + b"x",
    lambda d: d + b"\n",
    lambda d: d.replace(b'{"payload":"', b'{"payload":7,"x":"', 1),
    lambda d: d.replace(b'"signatures":[', b'"signatures":[{"sig":"QQ=="},', 1),
    lambda d: d.replace(b'"signatures":[', b'"signatures":{"a":[', 1),
    lambda d: d.replace(b'"payloadType":"', b'"payloadType":"\\ud800', 1),
    lambda d: d.replace(b'"payloadType":', b'"payloadType":1,"extra":', 1),
]


@settings(max_examples=scaled_examples(300), deadline=None)
@given(
    payload=st.binary(max_size=600),
    payload_type=st.text(max_size=20),
    sigs=signatures,
    edit=st.sampled_from(EDITS),
)
def test_read_envelope_is_parse_json_then_parse_envelope(
    payload: bytes, payload_type: str, sigs: list[EnvelopeSignature], edit: Callable[[bytes], bytes]
) -> None:
    """read_envelope decodes the payload in place and parses only the rest: for any bytes it
    gives the envelope, or the error, of the full reader (which refuses duplicate keys)."""
    data = edit(envelope_bytes(Envelope(payload, payload_type, tuple(sigs))))
    assert _fast(data) == _reference(data)


def test_read_envelope_refuses_a_second_payload() -> None:
    data = envelope_bytes(Envelope(b"signed", "t", (EnvelopeSignature("k", b"s"),)))
    evil = data[:-1] + b',"payload":"' + base64.b64encode(b"other") + b'"}'
    with pytest.raises(MalformedDocumentError, match="'payload' appears twice"):
        read_envelope(evil)
