"""Fuzzing the DSSE envelope and in-toto statement parsers with mutated real envelopes.

Seeds are real envelopes of the seed bundle (the function map, a seal, the manifest). Mutations
alter the envelope's JSON (fields, types, nesting, numbers, unicode), re-encode its base64 (URL-safe,
unpadded, with junk), or alter the statement inside and re-sign it with the role's key (to reach
the statement and schema checks behind the signature). Every entry point (strict envelope parsing,
signature verification for a role, seal parsing, `stella schema validate`) must answer with the
project's own errors only; and an envelope altered WITHOUT the key must never verify as anything
but the statement that was signed.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from bundle_mutations import payload_of, role_of, sign
from fuzz_support import (
    bounded_memory,
    call_allowing_own_errors,
    fuzz_settings,
    scratch_dir,
    seed_bundle,
    seed_keys,
)
from hypothesis import example, given
from hypothesis import strategies as st
from json_mutations import MUTATIONS, mutated_json
from tar_mutations import BYTE_OPS, apply_bytes

from stella_bundle.attest.dsse import parse_envelope, parse_statement_envelope
from stella_bundle.attest.statement import (
    BUNDLE_MANIFEST_PREDICATE,
    EVIDENCE_CHUNK_PREDICATE,
    FUNCTION_MAP_PREDICATE,
)
from stella_bundle.attest.verifier import AttestationVerifier
from stella_bundle.bundle.reader import SafeTarReader
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.jsonio import parse_json
from stella_bundle.schema import validate_file

PREDICATES = {
    "builder": BUNDLE_MANIFEST_PREDICATE,
    "function-map": FUNCTION_MAP_PREDICATE,
    "collector": EVIDENCE_CHUNK_PREDICATE,
}
SEED_NAMES = (
    "function-maps/fuzz-function-map.dsse.json",
    "evidence/host-a/0000000002.seal.dsse.json",
    "manifest.dsse.json",
)


@functools.cache
def envelopes() -> list[tuple[str, bytes]]:
    with SafeTarReader.open(seed_bundle().bundle) as reader:
        found = {m.name: s.read_all(1 << 24) for m, s in reader if m.name in SEED_NAMES}
    return [(name, found[name]) for name in SEED_NAMES]


@functools.cache
def verifier() -> AttestationVerifier:
    return AttestationVerifier(TrustRoot.load(seed_keys().trust_root))


def _b64_variant(text: str, how: str) -> str:
    raw = base64.b64decode(text)
    if how == "urlsafe":
        return base64.urlsafe_b64encode(raw).decode()
    if how == "unpadded":
        return base64.b64encode(raw).decode().rstrip("=")
    if how == "urlsafe-unpadded":
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if how == "newlines":
        return base64.encodebytes(raw).decode()
    if how == "mixed":  # both alphabets in one text
        return base64.b64encode(raw).decode().replace("+", "-", 1).replace("/", "_", 1) + "+/"
    if how == "padding-junk":
        return text + "=="
    return text


OPS = st.one_of(
    st.tuples(st.just("envelope"), st.lists(MUTATIONS, min_size=1, max_size=2)),
    st.tuples(st.just("payload"), st.lists(MUTATIONS, min_size=1, max_size=2)),
    st.tuples(
        st.just("base64"),
        st.sampled_from(["payload", "sig"]),
        st.sampled_from(
            ["urlsafe", "unpadded", "urlsafe-unpadded", "newlines", "mixed", "padding-junk"]
        ),
    ),
    st.tuples(st.just("bytes"), BYTE_OPS),
)

Recipe = tuple[int, list[tuple[Any, ...]]]
RECIPES: Any = st.tuples(
    st.integers(min_value=0, max_value=2), st.lists(OPS, min_size=1, max_size=3)
)


def mutate_envelope(recipe: Recipe) -> tuple[str, bytes, bool]:
    """(member name, envelope bytes, whether it was re-signed with the role's key)."""
    index, ops = recipe
    name, data = envelopes()[index]
    resigned = False
    for op in ops:
        try:
            if op[0] == "envelope":
                data = mutated_json(json.loads(data), op[1])
            elif op[0] == "payload":
                data = sign(mutated_json(json.loads(payload_of(data)), op[1]), role_of(name))
                resigned = True
            elif op[0] == "base64":
                document = json.loads(data)
                if op[1] == "payload":
                    document["payload"] = _b64_variant(document["payload"], op[2])
                else:
                    signature = document["signatures"][0]
                    signature["sig"] = _b64_variant(signature["sig"], op[2])
                data = json.dumps(document).encode()
            else:
                data = apply_bytes(data, op[1])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
            continue  # an earlier op broke what this one needs
    return name, data, resigned


def check_all_entry_points(name: str, data: bytes, resigned: bool) -> None:
    role = role_of(name)
    original = payload_of(envelopes()[SEED_NAMES.index(name)][1])

    def parse_and_verify() -> None:
        document = parse_json(data, name)
        parse_envelope(document, name)
        verified = verifier().verify_statement(
            document, role, source=name, predicate_type=PREDICATES[role]
        )
        if not resigned:
            # Without the key, no mutation may change what verifies.
            assert verified.payload == original, (name, verified.payload[:200])

    call_allowing_own_errors(parse_and_verify)
    call_allowing_own_errors(lambda: parse_statement_envelope(data, PREDICATES[role], name))
    if role == "collector":
        call_allowing_own_errors(lambda: parse_seal(data, name))
    path = scratch_dir("dsse") / name.rsplit("/", 1)[-1]
    path.write_bytes(data)
    call_allowing_own_errors(lambda: validate_file(path))


def test_seed_envelopes_verify() -> None:
    for name, data in envelopes():
        role = role_of(name)
        verifier().verify_statement(
            json.loads(data), role, source=name, predicate_type=PREDICATES[role]
        )
        check_all_entry_points(name, data, resigned=False)


@fuzz_settings(scale=0.6)
@given(recipe=RECIPES)
@example(recipe=(1, [("payload", [("raw", 0, 0)])]))  # an integer of 4,301 digits in a seal
@example(recipe=(0, [("envelope", [("raw", 1, 16)])]))  # nesting 100,000 deep
@example(recipe=(0, [("payload", [("add-key", 0, "payload", 1)])]))  # was a 2-line message
def test_dsse_mutated_envelopes(recipe: Recipe) -> None:
    name, data, resigned = mutate_envelope(recipe)
    with bounded_memory():
        check_all_entry_points(name, data, resigned)


@fuzz_settings(scale=0.2)
@given(data=st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_dsse_random_bytes(data: bytes) -> None:
    with bounded_memory():
        check_all_entry_points(SEED_NAMES[1], data, resigned=True)
