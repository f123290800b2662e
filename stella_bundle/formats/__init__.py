"""One typed model per format (DESIGN.md §3, §4): import a format's model from here.

| format | module | model | JSON Schema (the published contract) |
|---|---|---|---|
| observation record | `formats.record` | `ObservationRecord` | observation-record |
| function map (predicate) | `formats.function_map` | `FunctionMap` | function-map |
| seal (predicate) | `formats.seal` | `SealPredicate` | evidence-chunk |
| prune record (predicate) | `formats.prune` | `PruneRecord` | evidence-prune |
| bundle manifest (predicate) | `formats.manifest` | `ManifestPredicate` | bundle-manifest |
| trust root | `formats.trust_root` | `TrustRoot` | trust-root |
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

Most models are defined where their format is produced (they moved into this package as the
restructure of issue 10 goes on); these modules re-export them, so the name to import does not
change when a definition moves. This package imports nothing on its own: `import
stella_bundle.formats.seal` pays only for the seal.
"""
