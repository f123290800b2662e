"""What the commands that write something print: the files written and what an operator checks
next (a digest, a keyid, a count). Flat models, so `--format json` gives a script the same facts
the table line gives a person, and `from_dict` reads them back strictly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from .flat import read_flat


class _Flat:
    """`to_dict` / strict `from_dict` of a flat dataclass."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> Self:
        return cls(**read_flat(cls, data, source, "result"))


@dataclass(frozen=True)
class KeyGenerated(_Flat):
    """`keys generate`: the two files and the public key's identity."""

    private_key: str
    public_key: str
    keyid: str
    keytype: str
    scheme: str
    fingerprint_sha256: str
    encrypted: bool


@dataclass(frozen=True)
class TrustRootWritten(_Flat):
    """`trust-root init`, `add-key` and `set-sigstore`: the file written and what changed."""

    path: str
    change: str  # "init", "add-key" or "set-sigstore"
    expires: str
    keyid: str | None = None  # add-key: the key now trusted
    roles: list[str] = dataclasses.field(default_factory=list)  # add-key: for these roles
    sigstore_trusted_root: str | None = None  # set-sigstore: the file embedded
    sigstore_identities: int = 0


@dataclass(frozen=True)
class StatementSigned(_Flat):
    """`attest sign`: the envelope written, what it signs and by whom."""

    input: str
    envelope: str
    predicate_type: str
    keyids: list[str]


@dataclass(frozen=True)
class BundleBuilt(_Flat):
    """`bundle build`: the bundle, its digest (what the air-gapped side checks first) and what
    it holds."""

    bundle: str
    sha256: str
    size: int
    files: int
    services: list[str]
    chains: list[str]
    records: int


@dataclass(frozen=True)
class BundleSplit(_Flat):
    """`bundle split`: the parts written and their index (signed or not)."""

    bundle: str
    sha256: str
    part_size: int
    parts: list[str]
    index: str
    signed_index: str | None


@dataclass(frozen=True)
class BundleJoined(_Flat):
    """`bundle join`: the bundle rebuilt from checked parts."""

    bundle: str
    sha256: str
    size: int
    checked: list[str]  # parts whose sha256 was computed in this run
    reused: list[str]  # parts verified by an earlier run and unchanged since


@dataclass(frozen=True)
class TokenIssued(_Flat):
    """`serve token add`: the token, shown this once (only its SHA-256 is kept)."""

    name: str
    scopes: list[str]
    token: str


@dataclass(frozen=True)
class TokenRemoved(_Flat):
    """`serve token remove`: the token revoked and the file it was removed from."""

    name: str
    tokens: str
