"""`bundle verify`: the offline verification pipeline over one streaming pass of the archive.

Nothing is extracted: every member is hashed, parsed and checked as it streams by, holding only
the current member, one chain link per chain and the coverage tally in memory. The steps
(`steps.STEPS`) are reported in DESIGN.md order whatever order the archive presents its
members in; a hostile archive aborts the pass with `ArchiveError` before any report is written.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from .. import __version__
from ..attest.keys import fingerprint
from ..attest.statement import (
    BUNDLE_MANIFEST_PREDICATE,
    FUNCTION_MAP_PREDICATE,
    VERIFICATION_REPORT_PREDICATE,
    make_statement,
)
from ..attest.verifier import AttestationVerifier, VerifiedStatement
from ..bundle.layout import (
    CHUNK_RE,
    FUNCTION_MAP_ENVELOPE_RE,
    FUNCTION_MAP_RE,
    OBSERVATIONS_RE,
    PROBE_OBJECT_RE,
    PROBES_LOCK,
    PRUNE_RE,
    SCHEMA_RE,
    SEAL_RE,
    VERIFICATION,
    chunk_path,
    entry_order,
    function_map_paths,
)
from ..bundle.manifest import Manifest
from ..bundle.reader import ArchiveMember, MemberStream, ReaderLimits, SafeTarReader
from ..coverage import VerifyOptions
from ..coverage.scan import ObservationAggregator
from ..digests import HashingReader
from ..errors import (
    ArchiveError,
    BundleContentsError,
    EvidenceChainError,
    InputError,
    InternalError,
    MalformedDocumentError,
    SchemaValidationError,
    StellaError,
    VerificationFailure,
)
from ..formats.function_map import FunctionMap
from ..formats.manifest import MANIFEST, MANIFEST_ENVELOPE, ORDER_CHAIN
from ..formats.report import VerificationReport
from ..formats.roles import RoleName
from ..formats.trust_root import TrustRoot
from ..functionmap.load import function_map_from_statement
from ..jsonio import parse_json
from ..timeutil import format_timestamp, utc_now
from .chains import ChainVerifier
from .chunkwork import ChunkWork, WorkLimits
from .coverage import CoverageTally, map_window
from .records import ChunkLimits, ChunkScan, RecordPass
from .steps import StepOutcome, first_failure, new_outcomes

VERIFIER_ID = "https://stella.ops/verifier/stella-bundle"
# Documents (manifest, maps, seals, schemas) are read into memory; bulk data never is.
MAX_DOCUMENT = 64 * 1024 * 1024


@dataclass(frozen=True)
class VerifyLimits:
    archive: ReaderLimits = field(default_factory=ReaderLimits)
    chunks: ChunkLimits = field(default_factory=ChunkLimits)
    work: WorkLimits = field(default_factory=WorkLimits)
    # A chain-order view compared with its chunks by their content digests as it streams by
    # (`RecordPass.chain_view`); when that does not settle it, the bundle is verified again
    # with this off, comparing by pieces after every chunk's scan (the reference path).
    view_by_spans: bool = True


class _Redo(Exception):
    """The view was not shown to be its chain's contents: verify by the reference path."""


@dataclass
class VerificationOutcome:
    """What `verify_bundle` found: the report statement and how to exit."""

    statement: dict[str, Any]
    steps: dict[str, StepOutcome]

    @property
    def predicate(self) -> dict[str, Any]:
        predicate: dict[str, Any] = self.statement["predicate"]
        return predicate

    @property
    def report(self) -> VerificationReport:
        """The report, typed: what the renderers read."""
        try:
            return VerificationReport.from_dict(self.predicate, "verification report")
        except MalformedDocumentError as exc:  # the verifier's own output: a bug, not input
            raise InternalError(f"the verification report breaks its format: {exc}") from exc

    @property
    def passed(self) -> bool:
        return bool(self.predicate["verification_result"] == "PASSED")

    @property
    def failed_step(self) -> StepOutcome | None:
        return first_failure(self.steps)

    @property
    def exit_code(self) -> int:
        failed = self.failed_step
        if failed is None:
            return 0
        return failed.error.exit_code if failed.error is not None else 1

    def refusal(self) -> InputError | None:
        """The first failing step's error when it says the input is malformed rather than that
        a check failed: an `InputError` (exit 2, errors.py), such as a document or record that
        is not what it claims (not JSON, not an envelope, off its schema). Such a bundle is
        refused like a hostile archive, one line and no report (DESIGN.md 7); a report, FAILED
        with exit 1, is for well-formed content that fails a check. The first failing step
        decides, so content altered after signing fails the file list first (a report)."""
        failed = self.failed_step
        error = failed.error if failed is not None else None
        if failed is None or not isinstance(error, InputError):
            return None
        return type(error)(
            f"verification failed at step '{failed.spec.key}' ({failed.spec.title}): "
            f"{failed.message} (malformed input: no report written)"
        )

    def failure_line(self) -> str | None:
        failed = self.failed_step
        if failed is None:
            return None
        return f"verification failed at step '{failed.spec.key}' ({failed.spec.title}): {failed.message}"


def _signer_rows(trust_root: TrustRoot, verified: VerifiedStatement) -> list[dict[str, Any]]:
    return [
        {
            "keyid": key.keyid,
            "fingerprint": fingerprint(key),
            "roles": trust_root.roles_of(key.keyid),
        }
        for key in verified.signers
    ]


class _BundleCheck:
    """State of one verification pass; `run` drives it over the archive's members."""

    def __init__(
        self,
        bundle: Path,
        trust_root: TrustRoot,
        service: str | None,
        limits: VerifyLimits,
        now: dt.datetime | None,
        window: tuple[dt.datetime | None, dt.datetime | None] | None,
    ) -> None:
        self.window_override = window
        self.bundle = bundle
        self.trust_root = trust_root
        self.requested_service = service
        self.limits = limits
        self.now = now
        self.verifier = AttestationVerifier(trust_root, now=now)
        self.steps = new_outcomes()
        self.manifest: Manifest | None = None
        self.manifest_trusted = False
        self.service: str | None = None
        self.seen: dict[str, str] = {}
        self.documents: dict[str, bytes] = {}
        self.function_maps: dict[str, VerifiedStatement] = {}
        self.attestations: list[dict[str, Any]] = []
        self.probe_objects: dict[str, str] = {}
        self.probe_lock: dict[str, str] | None = None
        self.probe_lock_unreadable = False
        self.chains = ChainVerifier(trust_root, self.steps, now)
        self.records = RecordPass(self.steps, limits.chunks)
        self.work = ChunkWork()  # inline until `run` knows the archive's size
        # `view_by_spans`: each chunk's name and scan, in archive order, and the content size
        # its seal declares (unchecked: where `chain_view` cuts the view), for `chain_view`.
        self.chunk_scans: list[tuple[str, Callable[[], ChunkScan], bytes | None]] = []
        self.declared_sizes: dict[str, int] = {}
        self.view_path: str | None = None
        self.tally: CoverageTally | None = None
        self.bundle_sha256 = ""

    # --- helpers ---------------------------------------------------------------------------

    def step(self, key: str) -> StepOutcome:
        return self.steps[key]

    def read_document(self, stream: HashingReader, member: ArchiveMember) -> bytes:
        if member.size > MAX_DOCUMENT:
            raise ArchiveError(
                f"document member is {member.size} bytes, over the {MAX_DOCUMENT}-byte limit",
                path=member.name,
            )
        return stream.read(member.size)

    def parse_json_document(self, data: bytes, name: str) -> Any:
        try:
            return parse_json(data, name)
        except MalformedDocumentError as exc:
            self.step("schemas").fail(SchemaValidationError(exc.message, path=name))
            return None

    def validate(self, kind: str, document: Any, name: str) -> bool:
        from ..schema import validate_document

        try:
            validate_document(kind, document, source=name)
        except (SchemaValidationError, MalformedDocumentError, InputError) as exc:
            self.step("schemas").fail(
                exc
                if isinstance(exc, SchemaValidationError)
                else SchemaValidationError(exc.message, path=name, field=exc.field)
            )
            return False
        return True

    # --- the pass --------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.trust_root.check_not_expired(self.now, "trust root")
        except VerificationFailure as exc:
            self.step("trust-root").fail(exc)
        else:
            self.step("trust-root").finish(
                f"expires {format_timestamp(self.trust_root.expires)}; "
                f"{len(self.trust_root.keys)} keys"
            )
        try:
            raw = open(self.bundle, "rb")  # noqa: SIM115 - closed below
            size = os.fstat(raw.fileno()).st_size
        except OSError as exc:
            raise InputError(f"cannot open: {exc.strerror}", path=self.bundle) from exc
        # Workers are forked before the reader starts its inflating thread.
        self.work = ChunkWork(size, self.limits.work)
        with raw:
            whole = HashingReader(raw)
            reader = SafeTarReader(whole, str(self.bundle), self.limits.archive)  # type: ignore[arg-type]
            try:
                members = iter(reader)
                manifest_bytes = self.read_head(next(members, None), MANIFEST, "first")
                envelope_bytes = self.read_head(next(members, None), MANIFEST_ENVELOPE, "second")
                self.check_manifest(manifest_bytes, envelope_bytes)
                previous = MANIFEST_ENVELOPE
                try:
                    for member, stream in members:
                        self.check_entry_order(previous, member.name)
                        previous = member.name
                        self.member(member, stream)
                except ArchiveError:
                    # A chunk before this refusal may be refused itself: its turn comes first.
                    self.work.drain()
                    raise
                self.work.drain()
            finally:
                reader.close()
                self.work.close()
            whole.drain()
            self.bundle_sha256 = whole.digest.hexdigest()
        self.step("archive").finish(
            f"{reader.members} entries, {reader.decompressed} bytes decompressed, no link, "
            "device, duplicate, escaping path or bomb"
        )
        self.finish()

    def read_head(
        self, entry: tuple[ArchiveMember, MemberStream] | None, expected: str, place: str
    ) -> bytes:
        """The manifest and its envelope lead every bundle (see `layout.SECTIONS`)."""
        if entry is None or entry[0].name != expected:
            found = f"found {entry[0].name!r}" if entry else "the archive ends before it"
            raise ArchiveError(
                f"not a stella bundle: the {place} entry must be {expected} ({found})",
                path=self.bundle,
            )
        return self.read_document(HashingReader(entry[1]), entry[0])

    def check_entry_order(self, previous: str, name: str) -> None:
        """Only the builder's order is accepted (`layout.entry_order`, strictly increasing).

        The pass judges records with the function map met before them and a chain in the order
        of its chunks; an archive re-packed in another order could be judged differently, so it
        is refused as hostile rather than buffered.
        """
        if entry_order(name) <= entry_order(previous):
            raise ArchiveError(
                f"entry {name!r} is out of the canonical order (it follows {previous!r}; "
                "entries must be sorted by section, then path, as `bundle build` writes them)",
                path=self.bundle,
            )

    def check_manifest(self, manifest_bytes: bytes, envelope_bytes: bytes) -> None:
        step = self.step("manifest-signature")
        if self.step("trust-root").status == "failed":
            step.skip("not run: the trust root is not usable")
            return
        try:
            envelope = parse_json(envelope_bytes, MANIFEST_ENVELOPE)
            verified = self.verifier.verify_statement(
                envelope,
                RoleName.BUILDER,
                source=MANIFEST_ENVELOPE,
                predicate_type=BUNDLE_MANIFEST_PREDICATE,
            )
            if verified.payload != manifest_bytes:
                raise BundleContentsError(
                    "manifest.json is not the payload signed in manifest.dsse.json", path=MANIFEST
                )
            self.manifest = Manifest.from_statement(verified.statement, MANIFEST)
        except StellaError as exc:
            step.fail(exc)
            return
        self.manifest_trusted = True
        self.chains.expect(self.manifest.files)
        signers = _signer_rows(self.trust_root, verified)
        step.finish(
            f"signed by builder key {', '.join(s['keyid'][:16] for s in signers)}; "
            f"{len(self.manifest.files)} files listed"
        )
        self.attestations.append(
            {
                "uri": MANIFEST_ENVELOPE,
                "digest": {"sha256": _sha256(envelope_bytes)},
                "role": RoleName.BUILDER.value,
                "signers": signers,
            }
        )
        self.validate("bundle-manifest", verified.statement, MANIFEST)
        view = self.manifest.predicate.get("observations")
        if isinstance(view, dict) and view.get("order") == ORDER_CHAIN:
            self.records.view_order = ORDER_CHAIN
            self.records.view_by_spans = self.limits.view_by_spans
        services = [s for s in self.manifest.predicate.get("services", []) if isinstance(s, str)]
        if self.requested_service is not None:
            if self.requested_service not in services:
                raise InputError(
                    f"service {self.requested_service!r} is not in this bundle "
                    f"(services: {', '.join(services) or 'none'})",
                    field="--service",
                )
            self.service = self.requested_service
        elif len(services) == 1:
            self.service = services[0]
        elif services:
            raise InputError(
                f"the bundle holds several services ({', '.join(services)}); choose one",
                field="--service",
            )

    # --- members ---------------------------------------------------------------------------

    def member(self, member: ArchiveMember, stream: MemberStream) -> None:
        name = member.name
        hashing = HashingReader(stream)
        listed = self.manifest.files.get(name) if self.manifest else None
        file_list = self.step("file-list")
        if self.manifest_trusted:
            if listed is None:
                self.fail_later(
                    file_list,
                    BundleContentsError(
                        "file is in the archive but not in the manifest", path=name
                    ),
                )
            else:
                self.dispatch(member, hashing)
        hashing.drain()
        digest = hashing.digest.hexdigest()
        self.seen[name] = digest
        if listed is not None and (listed.sha256 != digest or listed.size != hashing.count):
            self.fail_later(
                file_list,
                BundleContentsError(
                    f"content differs from the manifest (sha256 {digest[:16]}…, {hashing.count} "
                    f"bytes; manifest says {listed.sha256[:16]}…, {listed.size} bytes)",
                    path=name,
                ),
            )
        self.work.pump()

    def fail_later(self, step: StepOutcome, error: StellaError) -> None:
        """Fail `step` in archive order (after the chunk scans still in flight)."""
        self.work.later(lambda: step.fail(error))

    def dispatch(self, member: ArchiveMember, stream: HashingReader) -> None:
        """Read the member now; what it does to the verdict goes through `self.work.later`,
        so that it comes after the effects of the chunks still being scanned."""
        name = member.name
        later = self.work.later
        if match := FUNCTION_MAP_RE.match(name) or FUNCTION_MAP_ENVELOPE_RE.match(name):
            self.documents[name] = self.read_document(stream, member)
            service = match.group("service")
            later(lambda: self.function_map(service))
        elif SCHEMA_RE.match(name):
            data = self.read_document(stream, member)
            later(lambda: self.parse_json_document(data, name), len(data))
        elif name == PROBES_LOCK:
            data = self.read_document(stream, member)
            later(lambda: self.probe_lock_document(data, name), len(data))
        elif PROBE_OBJECT_RE.match(name):
            stream.drain()
            self.probe_objects[name.rsplit("/", 1)[1]] = stream.digest.hexdigest()
        elif match := CHUNK_RE.match(name):
            self.chunk(match.group("chain"), int(match.group("seq")), member, stream)
        elif match := SEAL_RE.match(name):
            data = self.read_document(stream, member)
            chain, sequence = match.group("chain"), int(match.group("seq"))
            if self.records.view_by_spans:
                size = declared_content_bytes(data)
                if size is not None:
                    self.declared_sizes[chunk_path(chain, sequence)] = size
            later(lambda: self.chains.seal(chain, sequence, data, name), len(data))
        elif match := PRUNE_RE.match(name):
            data = self.read_document(stream, member)
            chain = match.group("chain")
            later(lambda: self.chains.prune_record(chain, data, name), len(data))
        elif match := OBSERVATIONS_RE.match(name):
            if self.records.view_by_spans:
                self.chain_view(name, stream)
                return
            if self.records.view_order == ORDER_CHAIN:
                # Its check needs every chunk's piece: the scans in flight are folded first.
                self.work.drain()
            self.observations_view(name, stream)
        elif name.startswith(VERIFICATION) and name.endswith(".json"):
            data = self.read_document(stream, member)
            later(lambda: self.parse_json_document(data, name), len(data))
        else:
            self.fail_later(
                self.step("file-list"),
                BundleContentsError("listed, but not part of the bundle layout", path=name),
            )

    def function_map(self, service: str) -> None:
        statement_name, envelope_name = function_map_paths(service)
        if statement_name not in self.documents or envelope_name not in self.documents:
            return
        statement_bytes = self.documents.pop(statement_name)
        envelope_bytes = self.documents.pop(envelope_name)
        step = self.step("function-map-signature")
        try:
            document = parse_json(envelope_bytes, envelope_name)
            verified = self.verifier.verify_statement(
                document,
                RoleName.FUNCTION_MAP,
                source=envelope_name,
                predicate_type=FUNCTION_MAP_PREDICATE,
            )
        except StellaError as exc:
            step.fail(exc)
            return
        if verified.payload != statement_bytes:
            step.fail(
                BundleContentsError(
                    f"not the Statement signed in {envelope_name}", path=statement_name
                )
            )
            return
        if verified.statement["predicate"].get("service") != service:
            step.fail(
                BundleContentsError(
                    "the signed map's service does not match its file name", path=statement_name
                )
            )
            return
        self.function_maps[service] = verified
        self.attestations.append(
            {
                "uri": envelope_name,
                "digest": {"sha256": _sha256(envelope_bytes)},
                "role": RoleName.FUNCTION_MAP.value,
                "signers": _signer_rows(self.trust_root, verified),
            }
        )
        if service == self.service:
            try:
                function_map = function_map_from_statement(verified.statement, statement_name)
            except StellaError as exc:
                self.step("schemas").fail(
                    exc
                    if isinstance(exc, SchemaValidationError)
                    else SchemaValidationError(exc.message, path=statement_name, field=exc.field)
                )
                return
            self.tally = CoverageTally(
                function_map, verified, statement_name, self.coverage_options(function_map)
            )

    def coverage_options(self, function_map: FunctionMap) -> VerifyOptions:
        if self.window_override is not None:
            return VerifyOptions(*self.window_override)
        declared = (self.manifest.predicate if self.manifest else {}).get("evidence_window")
        end = declared.get("last_observed_at") if isinstance(declared, dict) else None
        try:
            return VerifyOptions(*map_window(function_map, end if isinstance(end, str) else None))
        except ValueError as exc:
            raise MalformedDocumentError(
                str(exc), path=MANIFEST, field="predicate.evidence_window.last_observed_at"
            ) from exc

    def check_probe_objects(self, step: StepOutcome) -> None:
        """Each probe object against the lock (unless the lock was unreadable: named once)."""
        if not (self.probe_objects or self.probe_lock is not None) or self.probe_lock_unreadable:
            return
        lock = self.probe_lock or {}
        for object_name, digest in sorted(self.probe_objects.items()):
            if lock.get(object_name) != digest:
                step.fail(
                    BundleContentsError(
                        "probe object does not match probes/probes.lock.json",
                        path=f"probes/{object_name}",
                    )
                )

    def probe_lock_document(self, data: bytes, name: str) -> None:
        from ..collector.lockfile import parse_lock  # the airgap loader's own reading

        document = self.parse_json_document(data, name)
        if document is None:
            self.probe_lock_unreadable = True
            return
        try:
            lock = parse_lock(document, name)
        except MalformedDocumentError as exc:
            self.step("schemas").fail(
                SchemaValidationError(exc.message, path=name, field=exc.field)
            )
            self.probe_lock_unreadable = True  # named once, not again per object
            return
        self.probe_lock = {entry.name: entry.sha256 for entry in lock.objects.values()}

    def chunk(
        self, chain_id: str, sequence: int, member: ArchiveMember, stream: HashingReader
    ) -> None:
        aggregator = self.tally.aggregator if self.tally is not None else ObservationAggregator()

        def then(scan: ChunkScan) -> None:
            measure = self.records.apply(member, stream, scan, aggregator)
            self.chains.chunk(chain_id, sequence, measure)

        spec = self.records.spec(aggregator)
        # `chain_view`: the first chunk's span is checked by the view's own sha256, every
        # later one by a Poly1305 tag under a key drawn now for this chunk.
        key = os.urandom(32) if self.records.view_by_spans and self.chunk_scans else None
        if key is not None:
            spec = replace(spec, content_key=key)
        scan = self.work.scan(member, stream, spec, then)
        if self.records.view_by_spans:
            self.chunk_scans.append((member.name, scan, key))

    def observations_view(self, name: str, stream: HashingReader) -> None:
        self.view_path = name
        self.records.view(name, stream, self.work)

    def chain_view(self, name: str, stream: HashingReader) -> None:
        """The view read beside the chunks' scans; `_Redo` unless it is their contents (a
        second view too: the reference path settles what two views make of the report)."""
        if self.view_path is not None:
            raise _Redo
        self.view_path = name
        scans = [(scan, key) for _, scan, key in self.chunk_scans]
        declared = [self.declared_sizes.get(chunk) for chunk, _, _ in self.chunk_scans]
        if not self.records.chain_view(stream, scans, declared, self.work):
            raise _Redo
        self.chunk_scans = []

    # --- end of the pass -------------------------------------------------------------------

    def finish(self) -> None:
        steps = self.steps
        if not self.manifest_trusted:
            for key in ("file-list", "schemas", "function-map-signature", "evidence-chains"):
                steps[key].skip("not run: the manifest is not trusted")
            steps["coverage"].skip("not run: the manifest is not trusted")
            return
        assert self.manifest is not None
        for name in sorted(set(self.manifest.files) - set(self.seen)):
            steps["file-list"].fail(
                BundleContentsError(
                    "listed in the manifest but missing from the archive", path=name
                )
            )
        self.check_probe_objects(steps["file-list"])
        steps["file-list"].finish(
            f"{len(self.seen)} files, each listed with a matching sha256 and size; none missing"
        )
        steps["schemas"].finish(
            f"manifest, function maps, seals, {self.records.chain_lines} chain records and "
            f"{self.records.view_lines} view records conform"
        )
        if self.service is None:
            steps["function-map-signature"].fail(
                BundleContentsError("the bundle holds no function map", path=str(self.bundle))
            )
        elif (
            self.service not in self.function_maps
            and steps["function-map-signature"].status != "failed"
        ):
            steps["function-map-signature"].fail(
                BundleContentsError(
                    f"no signed function map for service {self.service!r}", path=str(self.bundle)
                )
            )
        steps["function-map-signature"].finish(
            f"{len(self.function_maps)} function map(s) signed by the function-map role"
        )
        self.chains.finish(steps["evidence-chains"])
        if self.view_path is None:
            steps["evidence-chains"].fail(
                BundleContentsError("the bundle has no observations view", path=str(self.bundle))
            )
        elif not self.records.view_matches_chains():
            steps["evidence-chains"].fail(
                EvidenceChainError(
                    "the observations view does not hold exactly the chains' records "
                    f"({self.records.view_lines} in the view, {self.records.chain_lines} in the "
                    "chains)",
                    path=self.view_path,
                )
            )
        declared = self.manifest.predicate.get("evidence_window")
        first, last = self.chains.window()
        actual = {"first_observed_at": first, "last_observed_at": last}
        if declared != actual:
            steps["evidence-chains"].fail(
                EvidenceChainError(
                    f"the manifest's evidence_window {declared} is not the seals' window {actual}",
                    path=MANIFEST,
                )
            )
        steps["evidence-chains"].finish(self.chains.summary())
        blocking = [
            k
            for k in ("file-list", "schemas", "function-map-signature", "evidence-chains")
            if steps[k].status == "failed"
        ]
        if blocking:
            steps["coverage"].skip(f"not run: step '{blocking[0]}' failed")
            return
        assert self.tally is not None
        self.tally.evaluate(steps["coverage"])

    # --- the report ------------------------------------------------------------------------

    def unverified_policy(self) -> dict[str, Any]:
        """The policy as the manifest lists it, when no map could be verified (report FAILED)."""
        if self.manifest is not None and self.service is not None:
            listed = self.manifest.files.get(function_map_paths(self.service)[0])
            if listed is not None:
                return {"uri": listed.path, "digest": {"sha256": listed.sha256}}
        # No map at all: the schema wants a digest; that of empty input marks "nothing".
        return {"uri": "none", "digest": {"sha256": hashlib.sha256(b"").hexdigest()}}

    def report(self) -> dict[str, Any]:
        passed = all(step.status == "passed" for step in self.steps.values())
        coverage = self.tally.result if self.tally is not None and self.tally.result else {}
        predicate: dict[str, Any] = {
            "verifier": {"id": VERIFIER_ID, "version": __version__},
            "time_verified": format_timestamp(self.now or utc_now()),
            "resource_uri": self.bundle.name,
            "resource_digest": {"sha256": self.bundle_sha256},
            "policy": self.unverified_policy(),
            "input_attestations": self.attestations + self.chains.attestations(),
            "verification_result": "PASSED" if passed else "FAILED",
            "verified": passed,
            "observation_rate": coverage.get("observation_rate", 0.0),
            "target_rate": coverage.get("target_rate", 0.0),
            "confidence": _overall_confidence(coverage.get("confidence")),
            "per_path_breakdown": coverage.get("per_path_breakdown", []),
            "per_tag": coverage.get("per_tag", {}),
            "unexpected_symbols": coverage.get("unexpected_symbols", []),
            "missing_symbols": coverage.get("missing_symbols", []),
            "evidence": self.chains.report(),
            "steps": [self.steps[key].to_dict() for key in self.steps],
        }
        if self.service is not None:
            predicate["service"] = self.service
        if self.tally is not None:
            predicate["policy"] = {
                "uri": self.tally.source,
                "digest": {"sha256": self.tally.policy_sha256},
            }
            if self.tally.window is not None:
                predicate["window"] = self.tally.window
        subject = [{"name": self.bundle.name, "digest": {"sha256": self.bundle_sha256}}]
        return make_statement(subject, VERIFICATION_REPORT_PREDICATE, predicate)


def declared_content_bytes(seal: bytes) -> int | None:
    """The content size a seal file declares, read without any check (None if it has none):
    where a chain-order view is cut, the cut confirmed by the chunk's own scan."""
    try:
        payload = base64.b64decode(orjson.loads(seal)["payload"], validate=True)
        size = orjson.loads(payload)["predicate"]["content"]["bytes"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        return None
    return size if type(size) is int and size >= 0 else None


def _overall_confidence(value: Any) -> float:
    if isinstance(value, dict):
        value = value.get("overall", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_bundle(
    bundle: Path,
    trust_root: TrustRoot,
    *,
    service: str | None = None,
    limits: VerifyLimits | None = None,
    now: dt.datetime | None = None,
    window: tuple[dt.datetime | None, dt.datetime | None] | None = None,
) -> VerificationOutcome:
    """Run every step; raise ArchiveError (nothing written) for a hostile or corrupt archive,
    and the first failing step's InputError for malformed content (`refusal`).

    `window` overrides the map's window (its last `window_seconds` up to the evidence's end).
    """
    limits = limits or VerifyLimits()
    check = _BundleCheck(bundle, trust_root, service, limits, now, window)
    try:
        try:
            check.run()
        except _Redo:
            limits = replace(limits, view_by_spans=False)
            check = _BundleCheck(bundle, trust_root, service, limits, now, window)
            check.run()
    except ArchiveError as exc:
        raise ArchiveError(
            f"verification failed at step 'archive' (hostile-archive checks): {exc.describe()}"
        ) from exc
    outcome = VerificationOutcome(check.report(), check.steps)
    refusal = outcome.refusal()
    if refusal is not None:
        raise refusal
    return outcome
