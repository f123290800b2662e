"""The end-to-end demo behind the README's first command, on embedded defaults.

Stage 1 (foundation): demo keys → trust root → a signed function-map statement → offline
verification. Later stages (collection, bundle, split/join, report) extend `run_demo`.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path

from .attest.keys import fingerprint, generate_key, load_signer
from .attest.signing import sign_to_file
from .attest.statement import FUNCTION_MAP_PREDICATE, make_statement, subject_for_bytes
from .attest.trustroot import TrustRoot
from .attest.verifier import AttestationVerifier
from .canonical import canonical_bytes
from .functionmap.symbols import node_hash
from .timeutil import format_timestamp, utc_now

DEMO_PURL = "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64"


def run_demo(workspace: Path | None = None, say: Callable[[str], None] = print) -> Path:
    """Run the demo in `workspace` (a new temporary directory by default); return it."""
    root = workspace or Path(tempfile.mkdtemp(prefix="stella-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    say(f"workspace: {root}")

    keys = {
        role: generate_key("ed25519", root / f"{role}-TEST-ONLY", None)
        for role in ("function-map", "auditor")
    }
    trust_root = TrustRoot(expires=utc_now() + dt.timedelta(days=30))
    for role, generated in keys.items():
        trust_root.add_key(generated.public_key, [role])
    trust_root.save(root / "trust-root.json")
    say(f"1. keys and trust root: {root / 'trust-root.json'}")
    for role, generated in keys.items():
        say(f"   {role:<13} {fingerprint(generated.public_key)}")

    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"purl": DEMO_PURL}]}
    sbom_bytes = canonical_bytes(sbom)
    (root / "app.cdx.json").write_bytes(sbom_bytes)
    predicate = {
        "service": "demo",
        "generated_at": format_timestamp(utc_now()),
        "expected_paths": [
            {
                "path_id": "crypto-0001",
                "tag": "crypto",
                "nodes": [
                    {"purl": DEMO_PURL, "symbol": s, "node_hash": node_hash(DEMO_PURL, s)}
                    for s in ("SSL_do_handshake", "SSL_write")
                ],
            }
        ],
    }
    statement = make_statement(
        [subject_for_bytes("app.cdx.json", sbom_bytes)], FUNCTION_MAP_PREDICATE, predicate
    )
    envelope_path = root / "demo-function-map.dsse.json"
    sign_to_file(statement, [load_signer(keys["function-map"].private_path)], envelope_path)
    say(f"2. signed function-map statement: {envelope_path}")

    verified = AttestationVerifier(TrustRoot.load(root / "trust-root.json")).verify_statement_file(
        envelope_path,
        "function-map",
        predicate_type=FUNCTION_MAP_PREDICATE,
        artifact=root / "app.cdx.json",
    )
    say(
        "3. verified offline: role function-map, signer "
        f"{verified.signers[0].keyid[:16]}…, subject app.cdx.json matches"
    )
    return root
