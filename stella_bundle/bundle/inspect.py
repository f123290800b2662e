"""`bundle inspect`: what a bundle claims to hold, read safely but NOT verified."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..attest.dsse import parse_envelope
from ..errors import MalformedDocumentError, StellaError
from ..formats.flat import read_flat, read_list
from ..formats.manifest import MANIFEST, MANIFEST_ENVELOPE
from ..formats.roles import RoleName
from ..jsonio import parse_json
from .layout import CHUNK_RE, FUNCTION_MAP_ENVELOPE_RE, SEAL_RE, section_rank
from .reader import ReaderLimits, SafeTarReader

NOT_VERIFIED = (
    "NOT VERIFIED: contents as the bundle claims them; nothing here is checked against a "
    "trust root (run `stella bundle verify`)"
)
MAX_DOCUMENT = 64 * 1024 * 1024


def _keyids(data: bytes, name: str) -> list[str]:
    try:
        envelope = parse_envelope(parse_json(data, name), name)
    except StellaError:  # unverified listing: an unreadable envelope names no signer
        return []
    return sorted({signature.keyid for signature in envelope.signatures})


def inspect_bundle(path: Path, limits: ReaderLimits | None = None) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    sections: Counter[str] = Counter()
    chunks: Counter[str] = Counter()
    chunk_bytes: Counter[str] = Counter()
    signers: dict[str, set[str]] = {}
    manifest: dict[str, Any] = {}
    total = 0
    with SafeTarReader.open(path, limits) as reader:
        for member, stream in reader:
            files.append({"path": member.name, "size": member.size})
            total += member.size
            sections[member.name.split("/", 1)[0] if "/" in member.name else member.name] += 1
            if match := CHUNK_RE.match(member.name):
                chunks[match.group("chain")] += 1
                chunk_bytes[match.group("chain")] += member.size
            wanted = member.name == MANIFEST or member.name.endswith(".dsse.json")
            if wanted and member.size <= MAX_DOCUMENT:
                data = stream.read_all(MAX_DOCUMENT)
                if member.name == MANIFEST:
                    try:
                        statement = parse_json(data, MANIFEST)
                    except StellaError:
                        statement = None
                    # Unverified: any JSON may be there; what is not an object shows nothing.
                    predicate = statement.get("predicate") if isinstance(statement, dict) else None
                    manifest = predicate if isinstance(predicate, dict) else {}
                    continue
                role = (
                    RoleName.BUILDER.value
                    if member.name == MANIFEST_ENVELOPE
                    else RoleName.FUNCTION_MAP.value
                    if FUNCTION_MAP_ENVELOPE_RE.match(member.name)
                    else RoleName.COLLECTOR.value
                    if SEAL_RE.match(member.name)
                    else "other"
                )
                signers.setdefault(role, set()).update(_keyids(data, member.name))
    files.sort(key=lambda f: (section_rank(f["path"]), f["path"]))
    services = manifest.get("services", [])
    return {
        "verified": False,
        "notice": NOT_VERIFIED,
        "bundle": path.name,
        "size": path.stat().st_size,
        "uncompressed_size": total,
        "created_at": manifest.get("created_at"),
        "builder": manifest.get("builder"),
        # Strings only, as `bundle verify` reads them (the table joins them).
        "services": [s for s in services if isinstance(s, str)]
        if isinstance(services, list)
        else [],
        "chains": [
            {"chain_id": chain, "chunks": chunks[chain], "bytes": chunk_bytes[chain]}
            for chain in sorted(chunks)
        ],
        "observations": manifest.get("observations"),
        "evidence_window": manifest.get("evidence_window"),
        "sections": dict(sorted(sections.items())),
        "claimed_signer_keyids": {role: sorted(ids) for role, ids in sorted(signers.items())},
        "files": files,
    }


@dataclass(frozen=True)
class ChainClaim:
    chain_id: str
    chunks: int
    bytes: int


@dataclass(frozen=True)
class FileClaim:
    path: str
    size: int


@dataclass(frozen=True)
class BundleClaims:
    """What `bundle inspect` prints: what a bundle claims to hold, NOT verified. The manifest's
    own values (created_at, builder, observations, evidence_window) are whatever JSON it holds."""

    bundle: str
    size: int
    uncompressed_size: int
    created_at: Any
    builder: Any
    services: tuple[str, ...]
    chains: tuple[ChainClaim, ...]
    observations: Any
    evidence_window: Any
    sections: Mapping[str, int]
    claimed_signer_keyids: Mapping[str, tuple[str, ...]]
    files: tuple[FileClaim, ...]

    @property
    def notice(self) -> str:
        return NOT_VERIFIED

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": False,
            "notice": self.notice,
            "bundle": self.bundle,
            "size": self.size,
            "uncompressed_size": self.uncompressed_size,
            "created_at": self.created_at,
            "builder": self.builder,
            "services": list(self.services),
            "chains": [dataclasses.asdict(chain) for chain in self.chains],
            "observations": self.observations,
            "evidence_window": self.evidence_window,
            "sections": dict(self.sections),
            "claimed_signer_keyids": {
                role: list(keyids) for role, keyids in self.claimed_signer_keyids.items()
            },
            "files": [dataclasses.asdict(item) for item in self.files],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> BundleClaims:
        values = read_flat(_ClaimFields, data, source, "inspect")
        if values["verified"] is not False or values["notice"] != NOT_VERIFIED:
            raise MalformedDocumentError(
                "an inspection is never verified", path=source, field="verified"
            )
        signers = values["claimed_signer_keyids"]
        if not isinstance(signers, dict) or not all(
            isinstance(ids, list) and all(isinstance(i, str) for i in ids)
            for ids in signers.values()
        ):
            raise MalformedDocumentError(
                "expected role → keyids", path=source, field="claimed_signer_keyids"
            )
        return cls(
            bundle=values["bundle"],
            size=values["size"],
            uncompressed_size=values["uncompressed_size"],
            created_at=values["created_at"],
            builder=values["builder"],
            services=tuple(values["services"]),
            chains=tuple(
                ChainClaim(**read_flat(ChainClaim, item, source, f"chains[{index}]"))
                for index, item in enumerate(read_list(values["chains"], source, "chains"))
            ),
            observations=values["observations"],
            evidence_window=values["evidence_window"],
            sections=values["sections"],
            claimed_signer_keyids={role: tuple(ids) for role, ids in signers.items()},
            files=tuple(
                FileClaim(**read_flat(FileClaim, item, source, f"files[{index}]"))
                for index, item in enumerate(read_list(values["files"], source, "files"))
            ),
        )


@dataclass(frozen=True)
class _ClaimFields:
    verified: bool
    notice: str
    bundle: str
    size: int
    uncompressed_size: int
    created_at: object
    builder: object
    services: list[str]
    chains: object
    observations: object
    evidence_window: object
    sections: dict[str, int]
    claimed_signer_keyids: object
    files: object


def bundle_claims(path: Path, limits: ReaderLimits | None = None) -> BundleClaims:
    """`inspect_bundle` as a typed result."""
    return BundleClaims.from_dict(inspect_bundle(path, limits), path)
