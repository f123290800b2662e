"""The formats under test: schema kind, example, model, and the rules only the model states."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stella_bundle.formats.function_map import FunctionMap
from stella_bundle.formats.manifest import ManifestPredicate
from stella_bundle.formats.prune import PruneRecord
from stella_bundle.formats.record import ObservationRecord
from stella_bundle.formats.report import VerificationReport
from stella_bundle.formats.seal import SealPredicate
from stella_bundle.formats.trust_root import TrustRoot

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "schemas" / "examples"


@dataclass(frozen=True)
class Case:
    kind: str  # the schema (stella_bundle/schemas/<kind>.schema.json)
    parse: Callable[[Any], Any]  # document -> model (from_dict)
    # Refusals of rules a JSON Schema cannot state (a message pattern each): the only places
    # where the model may refuse what the schema accepts.
    beyond_schema: tuple[str, ...] = ()


CASES: dict[str, Case] = {
    "observation-record": Case("observation-record", ObservationRecord.from_dict),
    "function-map": Case(
        "function-map",
        FunctionMap.from_dict,
        (
            # The node hash is sha256 of purl and symbol: a hash, not a pattern.
            r"does not match purl and symbol",
            # path_id is a key: unique across paths (uniqueItems cannot say "by one field").
            r"duplicate path_id",
        ),
    ),
    "evidence-chunk": Case("evidence-chunk", SealPredicate.from_dict),
    "evidence-prune": Case(
        "evidence-prune",
        PruneRecord.from_dict,
        # The removed range ends at the last removed seal: a relation between two fields.
        (r"the removed range and the last removed seal disagree",),
    ),
    "bundle-manifest": Case(
        "bundle-manifest",
        lambda document: ManifestPredicate.from_dict(document, "manifest.json"),
        (
            # The archive's name rules (NFC, no invisible characters, normalised path), the
            # same as the tar reader applies to members, and one entry per path.
            r"unsafe path",
            r"is listed twice",
            r"is a Unicode/case twin of",
            r"the manifest must not list itself",
        ),
    ),
    "trust-root": Case(
        "trust-root",
        TrustRoot.from_dict,
        (
            # Keys are parsed (a public key must be a key); roles name listed keys and a
            # reachable threshold; one key is listed once.
            r"keyid \S+ is not among the trust root's keys",
            r"threshold \d+ exceeds the",
            r"are the same public key",
            r"not a public key",
            r"does not match the key material",
        ),
    ),
    "verification-report": Case("verification-report", VerificationReport.from_dict),
}


def examples(kind: str) -> list[tuple[str, Any]]:
    """Every example document of a kind: KIND.json, and each line of KIND.ndjson."""
    found = []
    single = EXAMPLES / f"{kind}.json"
    if single.exists():
        found.append((single.name, json.loads(single.read_text())))
    lines = EXAMPLES / f"{kind}.ndjson"
    if lines.exists():
        for number, line in enumerate(lines.read_text().splitlines(), 1):
            found.append((f"{lines.name}:{number}", json.loads(line)))
    return found
