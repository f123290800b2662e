"""One typed model per format (DESIGN.md §3, §4): import a format's model from here.

| format | module | model | JSON Schema (the published contract) |
|---|---|---|---|
| observation record | `formats.record` | `ObservationRecord`, `validate_record` | observation-record |
| function map (predicate) | `formats.function_map` | `FunctionMap` (scope: `formats.scope`, node hashes: `formats.node_hash`) | function-map |
| seal (predicate) | `formats.seal` | `SealPredicate`, `CollectorInfo`, `LossCounters` | evidence-chunk |
| prune record (predicate) | `formats.prune` | `PruneRecord` | evidence-prune |
| bundle manifest (predicate) | `formats.manifest` | `ManifestPredicate` (and the rules for member names) | bundle-manifest |
| trust root | `formats.trust_root` | `TrustRoot` (keys: `formats.public_key`, roles: `formats.roles`) | trust-root |
| verification report (predicate) | `formats.report` | `VerificationReport` | verification-report |

The same rules hold for every model:

- `from_dict` accepts exactly what the format's schema accepts (tests/formats checks it on
  generated valid and mutated documents), plus the few rules a schema cannot state, each
  listed in that test (a node hash that must match its purl and symbol, a keyid a role names
  that must be among the keys, ...). A refusal is a `MalformedDocumentError` (or subclass) naming
  the field by its dotted path.
- Unknown fields are refused, at every level the model types, as the function map always did:
  a misspelt optional field would otherwise be dropped without a word (and a signed document
  would carry data that no reader checks). The schemas say the same (`additionalProperties:
  false`). The deliberately open parts of a format (a record's `details`, a collector's
  `source`, a Sigstore `trusted_root`, a report's `confidence_detail`) are kept as plain JSON
  values and are open in the schema too.
- `to_dict` writes the document back: `to_dict(from_dict(d)) == d` for every example in
  fixtures/schemas/examples and every document this toolkit writes. An optional field whose
  absence means zero or none (`loss.torn_records`, `loss.by_reason`, `probe_failures`) is written
  only when it holds something, so a document that spells out the zero reads the same and is
  written without it.

Every model is defined here, and this package imports nothing from the stages that produce or
check its documents (evidence, functionmap, coverage, bundle, verify, attest, collector, ...):
only the shared low-level modules (errors, canonical, timeutil, jsonio) and libraries. The stages
import their models from here; what produces or verifies a document stays in its stage:
building and signing seals (`evidence/seal.py`), prune records (`evidence/prune_record.py`) and
manifests (`bundle/manifest.py`), loading a signed function map (`functionmap/load.py`), key
generation and signing (`attest/keys.py`). tests/foundation/test_layering.py keeps it so.

One exception in kind, not in layer: reading a trust root's keys needs cryptography (through
securesystemslib), because the model must refuse one public key listed under two keyids (a
threshold would count one signer twice), which only the key material shows. That parsing is
`formats/public_key.py`, a library use, not a stage's; signing stays in `attest/`.

Importing this package imports nothing on its own: `import stella_bundle.formats.seal` pays
only for the seal, and `formats.roles` names a role without loading the key libraries.
"""
