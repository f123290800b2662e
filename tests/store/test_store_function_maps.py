"""One copy per function-map digest: a checked signature upgrades, nothing downgrades."""

from __future__ import annotations

from dataclasses import replace

from stella_bundle.store import open_store
from stella_bundle.store.base import StoredFunctionMap

STATEMENT = b'{"_type": "https://in-toto.io/Statement/v1"}'
UNSIGNED = StoredFunctionMap(
    digest="sha256:" + "ab" * 32,
    service="svc",
    statement=STATEMENT,
    envelope=None,
    signed=False,
    signature_checked=False,
    signers=(),
    stored_at="2026-01-20T10:00:00.000000Z",
)
SIGNED = replace(
    UNSIGNED,
    envelope=b'{"payload": "first"}',
    signed=True,
    signature_checked=True,
    signers=("key-1",),
    stored_at="2026-01-21T10:00:00.000000Z",
)
OTHER_SIGNED = replace(SIGNED, envelope=b'{"payload": "second"}', signers=("key-2",))


def test_checked_signature_upgrades_and_nothing_downgrades(backend_url: str) -> None:
    with open_store(backend_url, initialise=True) as store:
        assert store.put_function_map(UNSIGNED) is True
        assert store.put_function_map(UNSIGNED) is False
        # The verified signed copy replaces the unsigned one; the first stored_at stays.
        assert store.put_function_map(SIGNED) is True
        assert store.get_function_map(UNSIGNED.digest) == replace(
            SIGNED, stored_at=UNSIGNED.stored_at
        )
        # Unsigned again, the same envelope again, or another checked envelope: no change.
        for later in (UNSIGNED, SIGNED, OTHER_SIGNED):
            assert store.put_function_map(later) is False
            assert store.get_function_map(UNSIGNED.digest) == replace(
                SIGNED, stored_at=UNSIGNED.stored_at
            )
        assert [m.digest for m in store.list_function_maps()] == [UNSIGNED.digest]


def test_signed_first_is_kept_and_unchecked_envelope_is_upgraded(backend_url: str) -> None:
    unchecked = replace(SIGNED, signature_checked=False, signers=())
    other_digest = replace(unchecked, digest="sha256:" + "cd" * 32)
    with open_store(backend_url, initialise=True) as store:
        assert store.put_function_map(SIGNED) is True
        assert store.put_function_map(UNSIGNED) is False
        assert store.get_function_map(SIGNED.digest) == SIGNED
        # An envelope stored without a trust root (unchecked) is upgraded by a checked one.
        assert store.put_function_map(other_digest) is True
        checked = replace(OTHER_SIGNED, digest=other_digest.digest)
        assert store.put_function_map(checked) is True
        assert store.get_function_map(other_digest.digest) == replace(
            checked, stored_at=other_digest.stored_at
        )
