"""`bundle inspect`: what a bundle claims to hold, read safely but NOT verified."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..attest.dsse import parse_envelope
from ..errors import StellaError
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
