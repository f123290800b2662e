"""The table views: each result kind as rich tables for a terminal (registry's `table` format).

Each reads its typed model, so a misspelt field is a type error, not a silent default. Cells
that come from the input (symbols, paths, messages) are Text, never markup: a `[` in a symbol
must print as itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..formats.roles import ROLES
from ..timeutil import format_timestamp

if TYPE_CHECKING:
    # Types only: a view reads the result it is given; importing every model (the store's
    # pulls in its drivers) would make each table cost a second.
    from ..api.tokens import TokenListing
    from ..attest.keys import KeyFingerprint, TrustRootView
    from ..attest.outcome import AttestationCheck
    from ..bundle.inspect import BundleClaims
    from ..collector.doctor import KernelDoctor
    from ..collector.inventory import ProbeInventory
    from ..coverage.query import RecordSelection, SymbolSummaries
    from ..evidence.importer import ImportResult
    from ..evidence.prune import PruneOutcome
    from ..evidence.report import ChainReport, ChainVerification
    from ..evidence.status import ChainStatuses, Inspection
    from ..formats.coverage import CoverageReport
    from ..functionmap.generate import MapWritten
    from ..schema import SchemaCatalog, SchemaValidation
    from ..store.results import (
        StoreIngest,
        StoreInit,
        StoreMigrate,
        StorePrune,
        StoreStatusReport,
    )
    from ..tetragon.analysis import HotSymbols, Timeline
    from ..tetragon.ingest import BridgeIngest
    from ..tetragon.policy import PolicyWritten

_PATH_STYLE = {"observed": "green", "partial": "yellow", "missing": "red"}


def _cell(value: object) -> Text:
    """A cell from the input, printed as itself (a plain str cell would be read as markup)."""
    return Text("" if value is None else str(value))


def _percent(value: float) -> str:
    return f"{value:.2%}"


# --- function-map verify ---------------------------------------------------------------------


def coverage_table(report: CoverageReport) -> RenderableType:
    verdict = Text("VERIFIED", style="green") if report.verified else Text("NOT VERIFIED", "red")
    records = report.records
    parts: list[RenderableType] = [
        Text.assemble(
            verdict,
            f"  observation rate {_percent(report.observation_rate)} "
            f"(target {_percent(report.target_rate)}), confidence {report.confidence:.2f}, "
            f"records {records.get('in_window', 0)} in window / {records.get('read', 0)} read",
        )
    ]
    scope = report.scope
    if scope.declared:
        parts.append(
            Text(
                "scope: "
                + ", ".join(f"{k} {v}" for k, v in scope.declared.items())
                + f"; {scope.records_in_scope} record(s) in scope, "
                f"{scope.records_out_of_scope} out of scope (not counted)"
            )
        )
    parts += [Text.assemble(("out of scope:", "yellow"), f" {f}") for f in scope.findings]
    parts += [_coverage_paths(report), _coverage_tags(report)]
    if report.missing_symbols:
        missing = Table(title="Missing symbols")
        for column in ("purl", "symbol", "reason"):
            missing.add_column(column)
        for item in report.missing_symbols:
            missing.add_row(_cell(item["purl"]), _cell(item["symbol"]), _cell(item["reason"]))
        parts.append(missing)
    if report.unexpected_symbols:
        parts.append(_coverage_unexpected(report))
    parts += [Text(f"{d['diagnosis']}: {d.get('detail', '')}") for d in report.diagnoses]
    parts += [Text.assemble(("failed:", "red"), f" {failure}") for failure in report.failures]
    return Group(*parts)


def _coverage_paths(report: CoverageReport) -> Table:
    paths = Table(title="Expected paths", show_lines=False)
    for column in ("path", "tag", "status", "nodes", "confidence", "optional"):
        paths.add_column(column)
    for path in report.per_path_breakdown:
        paths.add_row(
            _cell(path.path_id),
            _cell(path.tag),
            Text(path.status, style=_PATH_STYLE.get(path.status, "")),
            f"{path.observed_nodes}/{path.total_nodes}",
            f"{path.confidence or 0.0:.2f}",
            "yes" if path.optional else "",
        )
    return paths


def _coverage_tags(report: CoverageReport) -> Table:
    tags = Table(title="Per tag")
    for column in ("tag", "observed/required", "rate", "min rate", "met"):
        tags.add_column(column)
    for name, tag in report.per_tag.items():
        tags.add_row(
            _cell(name),
            f"{tag.observed_paths}/{tag.required_paths}",
            _percent(tag.observation_rate or 0.0),
            _percent(tag.target_rate) if tag.target_rate is not None else "",
            "yes" if tag.verified else Text("no", style="red"),
        )
    return tags


def _coverage_unexpected(report: CoverageReport) -> Table:
    unexpected = Table(title="Unexpected symbols")
    for column in ("function", "purl", "count", "probe types", "diagnosis"):
        unexpected.add_column(column)
    for item in report.unexpected_symbols:
        unexpected.add_row(
            _cell(item["function_name"]),
            _cell(item["purl"]),
            str(item["count"]),
            _cell(", ".join(item["probe_types"])),
            _cell(item.get("diagnosis")),
        )
    return unexpected


# --- signals verify-chain ----------------------------------------------------------------------

_SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "dim"}


def chains_table(result: ChainVerification) -> RenderableType:
    return Group(*(line for chain in result.chains for line in _chain_lines(chain)))


def _chain_lines(report: ChainReport) -> list[RenderableType]:
    verdict = Text("PASSED", "green") if report.passed else Text("FAILED", "red")
    sequences = f"{report.first_sequence}..{report.last_sequence}" if report.chunks else "none"
    lines: list[RenderableType] = [
        Text.assemble(f"chain {report.chain_id}  ", verdict, f"  ({report.location})"),
        Text(
            f"  chunks {len(report.chunks)}  records {report.records}  sequences {sequences}  "
            f"final seal {'yes' if report.final_seal else 'no'}  signatures {report.signatures}  "
            f"events lost {report.events_lost}"
        ),
        Text(f"  window {report.first_observed_at or '-'} .. {report.last_observed_at or '-'}"),
    ]
    for chunk in report.chunks:
        signers = ",".join(k[:12] for k in chunk.signers) or "-"
        lines.append(
            Text(
                f"  {chunk.sequence:>10}  digest {chunk.digest:<11} signature {chunk.signature:<12} "
                f"link {chunk.link:<11} records {chunk.records:<8} {chunk.reason or '-':<9} "
                f"{'final' if chunk.final else '':<5} signer {signers}"
            )
        )
    for finding in report.findings:
        where = f" [{finding.file or finding.sequence}]" if finding.file or finding.sequence else ""
        extra = ""
        if finding.expected or finding.actual:
            extra = f" (expected {finding.expected}, actual {finding.actual})"
        lines.append(
            Text.assemble(
                "  ",
                (
                    f"{finding.severity:<7} {finding.code}",
                    _SEVERITY_STYLE.get(finding.severity, ""),
                ),
                f"{where}: {finding.message}{extra}",
            )
        )
    return lines


# --- observations query, timeline; tetragon hot-symbols ----------------------------------------


def records_table(result: RecordSelection) -> RenderableType:
    table = Table(title=f"Observations ({len(result.records)})")
    for column in ("observed at", "function", "probe", "count", "container", "comm"):
        table.add_column(column)
    for record in result.records:
        table.add_row(
            record.observed_at,
            _cell(record.function_name),
            record.probe_type,
            str(record.count or 1),
            _cell((record.container_id or "")[:12]),
            _cell(record.comm),
        )
    return table


def symbols_table(result: SymbolSummaries) -> RenderableType:
    table = Table(title=f"Observed symbols ({len(result.symbols)})")
    for column in ("function", "purl", "count", "first seen", "last seen", "probes", "containers"):
        table.add_column(column)
    for row in result.symbols:
        table.add_row(
            _cell(row.function_name),
            _cell(row.purl),
            str(row.count),
            row.first_observed_at,
            row.last_observed_at,
            ", ".join(sorted(row.probe_types)),
            _cell(", ".join(c[:12] for c in sorted(row.containers))),
        )
    return table


def timeline_table(result: Timeline) -> RenderableType:
    table = Table(title=f"Timeline ({len(result.events)} events)")
    for column in ("observed_at", "symbol", "purl", "probe", "image", "build_id", "container"):
        table.add_column(column)
    for entry in result.events:
        table.add_row(
            entry["observed_at"],
            _cell(entry["symbol"]),
            _cell(entry.get("purl")),
            _cell(entry.get("probe_type")),
            _cell(entry.get("image_digest")),
            _cell(entry.get("build_id")),
            _cell(str(entry.get("container_id", ""))[:12]),
        )
    return table


def hot_symbols_table(result: HotSymbols) -> RenderableType:
    table = Table(title=f"Hot symbols ({len(result.symbols)})")
    for column in ("purl", "symbol", "count", "first", "last"):
        table.add_column(column)
    for row in result.symbols:
        table.add_row(
            _cell(row.purl), _cell(row.symbol), str(row.count), row.first_seen, row.last_seen
        )
    if result.window_seconds is None:
        return table
    windows = Table(title=f"Per {result.window_seconds} s window")
    for column in ("window start", "purl", "symbol", "count"):
        windows.add_column(column)
    for item in result.windows or ():
        windows.add_row(item.window_start, _cell(item.purl), _cell(item.symbol), str(item.count))
    return Group(table, windows)


# --- signals status ----------------------------------------------------------------------------


def _pairs(values: Mapping[str, object]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def statuses_table(result: ChainStatuses) -> RenderableType:
    lines: list[RenderableType] = []
    for status in result.chains:
        lines.append(Text(f"chain {status.chain_id}  ({status.location})"))
        head = status.head
        if head is not None:
            lines.append(
                Text(
                    f"  head {head.sequence}  sealed {head.sealed_at} ({head.age_seconds} s ago)"
                    f"  reason {head.reason}  final {head.final}"
                )
            )
        lines.append(
            Text(
                f"  sealed chunks {status.sealed_chunks}  records {status.records}  size "
                f"{status.size_bytes} bytes  records/s {status.records_per_second or '-'}"
            )
        )
        if status.open_chunk is not None:
            lines.append(
                Text(
                    f"  open chunk {status.open_chunk.sequence}: {status.open_chunk.records} "
                    f"records, {status.open_chunk.bytes} bytes"
                )
            )
        lines.append(
            Text(f"  events lost {status.events_lost}  ({_pairs(status.loss.report_dict())})")
        )
        if status.pruned is not None:
            lines.append(
                Text(
                    f"  pruned sequences {status.pruned.first_sequence}-"
                    f"{status.pruned.last_sequence}"
                )
            )
    return Group(*lines)


# --- signals prune -----------------------------------------------------------------------------


def prune_table(result: PruneOutcome) -> RenderableType:
    verb = "would remove" if result.dry_run else "removed"
    lines = []
    for chain in result.chains:
        if not chain.removed_sequences:
            lines.append(Text(f"chain {chain.chain_id}: nothing older than {result.older_than}"))
            continue
        first, last = chain.removed_sequences[0], chain.removed_sequences[-1]
        lines.append(
            Text(
                f"chain {chain.chain_id}: {verb} sequences {first}-{last} "
                f"({len(chain.removed_sequences)} chunks, {chain.records_removed} records in the "
                "prune record's total)"
            )
        )
    return Group(*lines)


# --- signals inspect ---------------------------------------------------------------------------


def inspection_table(result: Inspection) -> RenderableType:
    parts: list[RenderableType] = []
    if result.seal is None:
        parts.append(Text(f"open chunk {result.source} (not sealed: not evidence yet)"))
    else:
        predicate = result.seal.predicate
        parts += [
            Text(f"seal {result.seal.file}  sha256 {result.seal.seal_sha256}"),
            Text(
                f"  chain {predicate.chain_id}  sequence {predicate.sequence}  reason "
                f"{predicate.reason}  final {predicate.final}  sealed {predicate.sealed_at}"
            ),
            Text(
                f"  records {predicate.content.records}  bytes {predicate.content.bytes}  "
                f"window {predicate.first_observed_at} .. {predicate.last_observed_at}"
            ),
            Text(f"  loss {_pairs(predicate.loss.to_dict())}"),
            Text(f"  collector {_pairs(predicate.collector.to_dict())}"),
            Text(f"  signed by {', '.join(result.seal.signature_keyids)}"),
        ]
    table = Table()
    table.add_column("observed_at", no_wrap=True)
    for column in ("function_name", "probe_type", "pid", "comm", "node_hash"):
        table.add_column(column)
    for record in result.records:
        table.add_row(
            _cell(record.get("observed_at", "")),
            _cell(record.get("function_name", "")),
            _cell(record.get("probe_type", "")),
            _cell(record.get("pid", "")),
            _cell(record.get("comm", "")),
            _cell(str(record.get("node_hash", ""))[:23] + "…"),
        )
    parts += [table, Text(f"{len(result.records)} of {result.total_records} records shown")]
    return Group(*parts)


# --- observations import, ingest, prune --------------------------------------------------------


def import_table(result: ImportResult) -> RenderableType:
    return Text(
        f"imported {result.records} records into chain {result.chain_id} "
        f"({result.chunks} sealed chunks) at {result.chain_dir}"
    )


def store_ingest_table(answer: StoreIngest) -> RenderableType:
    result = answer.result
    dropped = (
        f"; {result.records_dropped} record(s) DROPPED (store full)"
        if result.records_dropped
        else ""
    )
    return Text(
        f"store {answer.store}: {result.chunks_stored} chunk(s), {result.records_stored} record(s) "
        f"stored; {result.chunks_already_stored} chunk(s) already stored{dropped}"
    )


def store_prune_table(answer: StorePrune) -> RenderableType:
    result = answer.result
    dropped = ", ".join(p.name for p in result.partitions_dropped)
    return Text(
        f"store {answer.store}: {result.records_removed} record(s) before {result.cutoff} removed"
        + (f"; partitions dropped: {dropped}" if dropped else "")
    )


# --- function-map generate ---------------------------------------------------------------------


def map_written_table(result: MapWritten) -> RenderableType:
    sources = ", ".join(f"{k} {v}" for k, v in result.paths_by_source.items()) or "no sources"
    return Text(
        f"function map for {result.service}: {result.expected_paths} paths, {result.nodes} nodes "
        f"({sources}) → {result.output}"
        + (f" (signed: {result.signature})" if result.signature else "")
    )


# --- store init, migrate, status ---------------------------------------------------------------


def store_init_table(result: StoreInit) -> RenderableType:
    if result.applied:
        return Text(f"store {result.store}: initialised at schema version {result.schema_version}")
    return Text(
        f"store {result.store}: already initialised (schema version {result.schema_version})"
    )


def store_migrate_table(result: StoreMigrate) -> RenderableType:
    if result.applied:
        return Text(
            f"store {result.store}: migrated {result.from_version} → {result.schema_version} "
            f"(applied {', '.join(map(str, result.applied))})"
        )
    return Text(f"store {result.store}: up to date (schema version {result.schema_version})")


def store_status_table(result: StoreStatusReport) -> RenderableType:
    lines = []
    for key, value in result.to_dict().items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        lines.append(Text(f"{key}: {value}"))
    return Group(*lines)


# --- keys fingerprint --------------------------------------------------------------------------


def fingerprint_table(result: KeyFingerprint) -> RenderableType:
    return Group(*(Text(f"{name + ':':<20}{value}") for name, value in result.to_dict().items()))


# --- trust-root show ---------------------------------------------------------------------------


def trust_root_table(view: TrustRootView) -> RenderableType:
    root = view.root
    status = Text("EXPIRED", "red") if view.expired else Text("valid")
    parts: list[RenderableType] = [
        Text.assemble(
            f"trust root {view.path}: version {root.version}, "
            f"expires {format_timestamp(root.expires)} (",
            status,
            ")",
        )
    ]
    table = Table("role", "threshold", "keyids")
    for name in ROLES:
        role = root.roles[name]
        keyids = ", ".join(keyid[:16] + "…" for keyid in role.keyids) or "(none)"
        table.add_row(name, str(role.threshold), keyids)
    parts.append(table)
    # Fingerprints on lines of their own: a table would wrap them, and they are compared by eye.
    fingerprints = view.fingerprints
    for keyid, key in sorted(root.keys.items()):
        roles = ", ".join(root.roles_of(keyid)) or "no role"
        parts.append(Text(f"key {keyid} ({key.keytype}; {roles})"))
        parts.append(Text(f"    fingerprint: {fingerprints[keyid]}"))
    if root.sigstore is not None:
        parts += [
            Text(f"sigstore identity: {pair.identity} (issuer {pair.issuer})")
            for pair in root.sigstore.identities
        ]
    return Group(*parts)


# --- bundle inspect ----------------------------------------------------------------------------


def claims_table(claims: BundleClaims) -> RenderableType:
    chains = Table(title="chains (not verified)", title_justify="left")
    for column in ("chain", "chunks", "bytes"):
        chains.add_column(column)
    for chain in claims.chains:
        chains.add_row(_cell(chain.chain_id), str(chain.chunks), str(chain.bytes))
    signers = Table(title="claimed signer keyids (not verified)", title_justify="left")
    signers.add_column("role")
    signers.add_column("keyids")
    for role, keyids in claims.claimed_signer_keyids.items():
        signers.add_row(_cell(role), _cell(", ".join(keyids)))
    files = Table(title="files (not verified)", title_justify="left")
    files.add_column("path")
    files.add_column("size", justify="right")
    for item in claims.files:
        files.add_row(_cell(item.path), str(item.size))
    return Group(
        Text(claims.notice, style="bold red"),
        Text(
            f"{claims.bundle}: {claims.size} bytes ({claims.uncompressed_size} uncompressed), "
            f"created {claims.created_at}, services {', '.join(claims.services) or 'none'}"
        ),
        chains,
        signers,
        files,
    )


# --- serve token list --------------------------------------------------------------------------


def tokens_table(listing: TokenListing) -> RenderableType:
    return Group(
        *(
            Text(f"{entry.name}  {','.join(entry.scopes)}  {entry.created_at}")
            for entry in listing.entries
        )
    )


# --- tetragon policy ---------------------------------------------------------------------------


def policy_table(result: PolicyWritten) -> RenderableType:
    return Text(f"wrote TracingPolicy {result.name} with {result.probes} probes to {result.output}")


# --- probes list -------------------------------------------------------------------------------


def probes_table(inventory: ProbeInventory) -> RenderableType:
    table = Table(title=f"probe set {inventory.probe_set_sha256[:16]}… ({inventory.directory})")
    for column in ("object", "sha256", "status", "programs"):
        table.add_column(column)
    for item in inventory.objects:
        programs = ", ".join(f"{p.name} ({p.attach_type})" for p in item.programs)
        table.add_row(_cell(item.name), item.sha256, _cell(item.status), _cell(programs))
    return table


# --- schema list -------------------------------------------------------------------------------


def schemas_table(catalog: SchemaCatalog) -> RenderableType:
    table = Table("kind", "schema file (in stella_bundle/schemas/)", "title")
    for entry in catalog.schemas:
        table.add_row(entry.kind, entry.file, entry.title)
    return table


# --- schema validate ---------------------------------------------------------------------------


def validation_table(validation: SchemaValidation) -> RenderableType:
    from ..schema import ValidationRefusal  # loaded already: it made the result

    result = validation.outcome
    if isinstance(result, ValidationRefusal):  # the CLI prints its error line on stderr
        return Text(f"invalid {result.path}: {result.message}", style="red")
    count = result.documents
    what = {
        "ndjson": f"{count} {result.kind} line{'s' if count != 1 else ''}",
        "statement": f"{result.kind} statement",
        "dsse-envelope": f"{result.kind} in a DSSE envelope (signatures not checked)",
        "json": result.kind,
    }[result.container]
    return Text.assemble(("valid", "green"), f" {result.path}: {what}")


# --- probes doctor -----------------------------------------------------------------------------


def doctor_tables(doctor: KernelDoctor) -> RenderableType:
    table = Table(title="kernel features")
    for column in ("feature", "status", "detail"):
        table.add_column(column)
    for feature in doctor.features:
        table.add_row(feature.name, "yes" if feature.available else "NO", _cell(feature.detail))
    trials = Table(title="attach types (each tried: a tiny program loaded and attached)")
    for column in ("attach type", "status", "evidence"):
        trials.add_column(column)
    for trial in doctor.attach_types:
        trials.add_row(
            trial.attach_type, "yes" if trial.available else "NO", _cell(trial.evidence())
        )
    plan = Table(title="probe categories")
    for column in ("category", "attach type", "why"):
        plan.add_column(column)
    for choice in doctor.categories:
        plan.add_row(choice.category, choice.attach_type or "none", _cell(choice.reason))
    return Group(table, trials, plan)


# --- attest verify -----------------------------------------------------------------------------


def attestation_view(check: AttestationCheck) -> RenderableType:
    from ..attest.outcome import AttestationRefusal, StatementVerified  # loaded: they made it

    result = check.outcome
    if isinstance(result, AttestationRefusal):  # the CLI prints its error line on stderr
        return Text(f"NOT VERIFIED: {result.message}", style="red")
    verified = Text("VERIFIED", style="green")
    if isinstance(result, StatementVerified):
        subjects = Table("subject", "sha256")
        for subject in result.subjects:
            digest = subject.get("digest", {})
            sha256 = digest.get("sha256", "") if isinstance(digest, dict) else ""
            subjects.add_row(_cell(subject.get("name", "")), _cell(sha256))
        return Group(
            Text.assemble(
                verified, f" {result.envelope} ({result.predicate_type}, role {result.role})"
            ),
            subjects,
            *(Text(f"signed by {s.keyid} ({s.fingerprint_sha256})") for s in result.signers),
        )
    what = f"DSSE {result.predicate_type}" if result.kind == "dsse" else "message signature"
    return Group(
        Text.assemble(verified, f" {result.bundle} (Sigstore, {what})"),
        Text(f"artifact:  {result.artifact_digest}"),
        Text(f"signed by: {result.identity.identity} (issuer {result.identity.issuer})"),
        *(Text.assemble(("warning", "yellow"), f": {w}") for w in result.warnings),
    )


# --- tetragon ingest ---------------------------------------------------------------------------


def bridge_ingest_view(ingest: BridgeIngest) -> RenderableType:
    result = ingest.result
    if result is None:
        return Text("the Tetragon bridge is disabled (tetragon.enabled: false): nothing ingested")
    lines = [
        f"ingested {result.records} of {result.lines} events into chain {result.chain_id} "
        f"({result.chunks} sealed chunks); {sum(result.dropped.values())} not recorded, "
        f"{sum(result.redacted.values())} values redacted"
    ]
    lines += [f"  not recorded: {reason}: {n}" for reason, n in sorted(result.dropped.items())]
    return Group(*(Text(line) for line in lines))
