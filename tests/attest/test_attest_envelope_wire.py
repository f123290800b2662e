"""The fast envelope serialiser is byte-identical to the RFC 8785 reference; base64 is strict."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.attest.dsse import Envelope, EnvelopeSignature, envelope_bytes, parse_envelope
from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import MalformedDocumentError

signatures = st.lists(
    st.builds(EnvelopeSignature, keyid=st.text(max_size=70), sig=st.binary(max_size=80)),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=2048), payload_type=st.text(max_size=60), sigs=signatures)
def test_envelope_bytes_match_reference(
    payload: bytes, payload_type: str, sigs: list[EnvelopeSignature]
) -> None:
    envelope = Envelope(payload, payload_type, tuple(sigs))
    assert envelope_bytes(envelope) == canonical_bytes(envelope.to_dict())


@settings(max_examples=100, deadline=None)
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
