"""The kinds of result the commands print, each with its model and its views.

The model is named from `formats/` (or the library module that produces it) and the views from
`report/`; strings, so that choosing a `--format` imports nothing heavy."""

from __future__ import annotations

from typing import Final

from .registry import ResultKind

COVERAGE: Final = ResultKind(
    "function-map verification report",
    "stella_bundle.formats.coverage:CoverageReport",
    "stella_bundle.report.tables:coverage_table",
)
BUNDLE_REPORT: Final = ResultKind(
    "bundle verification report",
    "stella_bundle.formats.report:VerificationReport",
    "stella_bundle.report.render:report_renderable",
    "stella_bundle.report.render:render_html",
)
CHAINS: Final = ResultKind(
    "chain verification",
    "stella_bundle.evidence.report:ChainVerification",
    "stella_bundle.report.tables:chains_table",
)
RECORDS: Final = ResultKind(
    "record selection",
    "stella_bundle.coverage.query:RecordSelection",
    "stella_bundle.report.tables:records_table",
)
SYMBOLS: Final = ResultKind(
    "per-symbol summary",
    "stella_bundle.coverage.query:SymbolSummaries",
    "stella_bundle.report.tables:symbols_table",
)
TIMELINE: Final = ResultKind(
    "timeline",
    "stella_bundle.tetragon.analysis:Timeline",
    "stella_bundle.report.tables:timeline_table",
)
HOT_SYMBOLS: Final = ResultKind(
    "hot-symbol count",
    "stella_bundle.tetragon.analysis:HotSymbols",
    "stella_bundle.report.tables:hot_symbols_table",
)
STATUSES: Final = ResultKind(
    "chain status",
    "stella_bundle.evidence.status:ChainStatuses",
    "stella_bundle.report.tables:statuses_table",
)
PRUNES: Final = ResultKind(
    "chain prune",
    "stella_bundle.evidence.prune:PruneOutcome",
    "stella_bundle.report.tables:prune_table",
)
INSPECTION: Final = ResultKind(
    "chunk inspection",
    "stella_bundle.evidence.status:Inspection",
    "stella_bundle.report.tables:inspection_table",
)
IMPORT: Final = ResultKind(
    "import",
    "stella_bundle.evidence.importer:ImportResult",
    "stella_bundle.report.tables:import_table",
)
STORE_INGEST: Final = ResultKind(
    "store ingest",
    "stella_bundle.store.results:StoreIngest",
    "stella_bundle.report.tables:store_ingest_table",
)
STORE_PRUNE: Final = ResultKind(
    "store prune",
    "stella_bundle.store.results:StorePrune",
    "stella_bundle.report.tables:store_prune_table",
)
MAP_WRITTEN: Final = ResultKind(
    "function map written",
    "stella_bundle.functionmap.generate:MapWritten",
    "stella_bundle.report.tables:map_written_table",
)
STORE_INIT: Final = ResultKind(
    "store initialisation",
    "stella_bundle.store.results:StoreInit",
    "stella_bundle.report.tables:store_init_table",
)
STORE_MIGRATE: Final = ResultKind(
    "store migration",
    "stella_bundle.store.results:StoreMigrate",
    "stella_bundle.report.tables:store_migrate_table",
)
STORE_STATUS: Final = ResultKind(
    "store status",
    "stella_bundle.store.results:StoreStatusReport",
    "stella_bundle.report.tables:store_status_table",
)
FINGERPRINT: Final = ResultKind(
    "key fingerprint",
    "stella_bundle.attest.keys:KeyFingerprint",
    "stella_bundle.report.tables:fingerprint_table",
)
TRUST_ROOT: Final = ResultKind(
    "trust root",
    "stella_bundle.attest.keys:TrustRootView",
    "stella_bundle.report.tables:trust_root_table",
)
BUNDLE_CLAIMS: Final = ResultKind(
    "bundle inspection",
    "stella_bundle.bundle.inspect:BundleClaims",
    "stella_bundle.report.tables:claims_table",
)
TOKENS: Final = ResultKind(
    "token listing",
    "stella_bundle.api.tokens:TokenListing",
    "stella_bundle.report.tables:tokens_table",
)
POLICY: Final = ResultKind(
    "TracingPolicy written",
    "stella_bundle.tetragon.policy:PolicyWritten",
    "stella_bundle.report.tables:policy_table",
)
PROBES: Final = ResultKind(
    "probe inventory",
    "stella_bundle.collector.inventory:ProbeInventory",
    "stella_bundle.report.tables:probes_table",
)
SCHEMAS: Final = ResultKind(
    "schema catalog",
    "stella_bundle.schema:SchemaCatalog",
    "stella_bundle.report.tables:schemas_table",
)
SCHEMA_VALIDATION: Final = ResultKind(
    "schema validation",
    "stella_bundle.schema:SchemaValidation",
    "stella_bundle.report.tables:validation_table",
)
DOCTOR: Final = ResultKind(
    "kernel feature check",
    "stella_bundle.collector.doctor:KernelDoctor",
    "stella_bundle.report.tables:doctor_tables",
)
ATTESTATION: Final = ResultKind(
    "attestation verification",
    "stella_bundle.attest.outcome:AttestationCheck",
    "stella_bundle.report.tables:attestation_view",
)
TETRAGON_INGEST: Final = ResultKind(
    "Tetragon ingest",
    "stella_bundle.tetragon.ingest:BridgeIngest",
    "stella_bundle.report.tables:bridge_ingest_view",
)


def _written(name: str, model: str, view: str) -> ResultKind:
    return ResultKind(
        name, f"stella_bundle.formats.written:{model}", f"stella_bundle.report.written:{view}"
    )


KEY_GENERATED: Final = _written("key pair written", "KeyGenerated", "key_generated_table")
TRUST_ROOT_WRITTEN: Final = _written(
    "trust root written", "TrustRootWritten", "trust_root_written_table"
)
STATEMENT_SIGNED: Final = _written("signed statement", "StatementSigned", "statement_signed_table")
BUNDLE_BUILT: Final = _written("bundle built", "BundleBuilt", "bundle_built_table")
BUNDLE_SPLIT: Final = _written("bundle split", "BundleSplit", "bundle_split_table")
BUNDLE_JOINED: Final = _written("bundle joined", "BundleJoined", "bundle_joined_table")
TOKEN_ISSUED: Final = _written("token issued", "TokenIssued", "token_issued_table")
TOKEN_REMOVED: Final = _written("token removed", "TokenRemoved", "token_removed_table")
