"""`stella bundle`: Build, inspect, split, join and verify .stella.bundle.tgz archives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from ..report.kinds import (
    BUNDLE_BUILT,
    BUNDLE_CLAIMS,
    BUNDLE_JOINED,
    BUNDLE_REPORT,
    BUNDLE_SPLIT,
)
from ..report.registry import OutputFormat
from .options import time_option
from .output import console, emit, error_console, error_line, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)

# Below this, a progress bar is more noise than help.
PROGRESS_THRESHOLD = 64 * 1024 * 1024


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(done, total)`; a rich bar on stderr when enabled and stderr is a terminal."""
    if not enabled or not error_console.is_terminal:
        yield lambda done, total: None
        return
    # Imported here: a build or verify that shows no bar does not pay for it.
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=error_console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@app.command("build")
def build(
    function_map: list[Path] = typer.Option(
        ..., "--function-map", help="FM.json or FM.dsse.json (signed); repeat per service."
    ),
    evidence: list[Path] = typer.Option(
        ..., "--evidence", help="Evidence directory (chains below it) or one chain directory."
    ),
    key: Path = typer.Option(..., "--key", help="Builder private key (signs the manifest)."),
    output: Path = typer.Option(..., "--output", help="NAME.stella.bundle.tgz to write."),
    probes: Path | None = typer.Option(
        None,
        "--probes",
        help="Directory of *.bpf.o with probes.lock.json (default: no probe objects in the bundle).",
    ),
    date_label: str | None = typer.Option(
        None, "--date-label", help="Label of the observations view (default: build date)."
    ),
    output_format: OutputFormat = format_option(BUNDLE_BUILT),
) -> None:
    """Build a reproducible, signed bundle (SOURCE_DATE_EPOCH fixes the timestamps)."""
    from ..attest.keys import load_signer
    from ..bundle.build import build_bundle
    from ..formats.written import BundleBuilt

    signer = load_signer(key)
    big = sum(p.stat().st_size for d in evidence if d.is_dir() for p in d.rglob("*") if p.is_file())
    with _progress("building", big >= PROGRESS_THRESHOLD) as update:
        result = build_bundle(
            function_maps=function_map,
            evidence=evidence,
            signer=signer,
            output=output,
            probes=probes,
            date_label=date_label,
            progress=lambda _stage, done, total: update(done, total),
        )
    built = BundleBuilt(
        str(result.output),
        result.sha256,
        result.size,
        result.files,
        list(result.services),
        list(result.chains),
        result.records,
    )
    emit(built, output_format, BUNDLE_BUILT)


@app.command("inspect")
def inspect(
    bundle: Path = typer.Argument(..., help="The .stella.bundle.tgz to look into."),
    output_format: OutputFormat = format_option(BUNDLE_CLAIMS),
) -> None:
    """Show what a bundle claims to hold (NOT verified; use `bundle verify`)."""
    from ..bundle.inspect import bundle_claims

    emit(bundle_claims(bundle), output_format, BUNDLE_CLAIMS)


@app.command("verify")
def verify(
    bundle: Path = typer.Argument(..., help="The .stella.bundle.tgz to verify."),
    trust_root_path: Path = typer.Option(..., "--trust-root", help="trust-root.json you brought."),
    output_format: OutputFormat = format_option(BUNDLE_REPORT),
    output_dir: Path = typer.Option(
        Path("."), "--output-dir", help="Where the report files are written."
    ),
    report_key: Path | None = typer.Option(
        None,
        "--report-key",
        help="Auditor private key: also write verification-report.dsse.json (default: unsigned).",
    ),
    service: str | None = typer.Option(
        None,
        "--service",
        help="Service to verify when the bundle holds several (default: the only one).",
    ),
    window_from: str | None = typer.Option(
        None,
        "--from",
        help="Override the map's window: start, RFC 3339 (default: the map's window).",
    ),
    window_to: str | None = typer.Option(
        None, "--to", help="Override the map's window: end, RFC 3339 (default: the map's window)."
    ),
    max_member_size: str = typer.Option(
        "16G", "--max-member-size", help="Refuse any archive member declaring more (e.g. 4G)."
    ),
) -> None:
    """Verify offline, streaming the archive: exit 0 passed, 1 failed, 2 bad input."""
    from ..attest.keys import load_signer
    from ..bundle.reader import ReaderLimits
    from ..formats.trust_root import TrustRoot
    from ..report import check_auditor_key, write_reports
    from ..sizes import parse_size
    from ..verify import VerifyLimits, verify_bundle

    trust_root = TrustRoot.load(trust_root_path)
    signer = None
    if report_key is not None:
        signer = load_signer(report_key)
        check_auditor_key(signer, trust_root, report_key)
    window = None
    if window_from is not None or window_to is not None:
        window = (time_option(window_from, "--from"), time_option(window_to, "--to"))
    limits = VerifyLimits(
        archive=ReaderLimits(max_member_size=parse_size(max_member_size, "--max-member-size"))
    )
    outcome = verify_bundle(
        bundle,
        trust_root,
        service=service,
        limits=limits,
        window=window,  # type: ignore[arg-type]
    )
    files = write_reports(outcome, output_dir, signer)
    emit(outcome.report, output_format, BUNDLE_REPORT)
    if output_format == OutputFormat.table:
        console.print(f"report: {files.json}")
        console.print(f"html:   {files.html}")
        if files.envelope is not None:
            console.print(f"signed: {files.envelope}")
    failure = outcome.failure_line()
    if failure is not None:
        error_line(f"error: {failure}")
        raise typer.Exit(outcome.exit_code)


@app.command("split")
def split(
    bundle: Path = typer.Argument(..., help="The .stella.bundle.tgz to split."),
    part_size: str = typer.Option(
        ..., "--part-size", help="Bytes, a size like 700M or 4G, or fat32, dvd, bd."
    ),
    key: Path | None = typer.Option(
        None,
        "--key",
        help="Builder key: also write NAME.parts.dsse.json (default: unsigned index).",
    ),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", help="Where the parts go (default: beside the bundle)."
    ),
    output_format: OutputFormat = format_option(BUNDLE_SPLIT),
) -> None:
    """Split into NAME.part-0001… and NAME.parts.json (sizes and sha256 of parts and whole)."""
    from ..attest.keys import load_signer
    from ..bundle.media import parse_part_size, split_bundle
    from ..formats.written import BundleSplit

    size = parse_part_size(part_size)
    signer = load_signer(key) if key is not None else None
    result = split_bundle(bundle, size, output_dir=output_dir, signer=signer)
    parts = BundleSplit(
        result.index.bundle,
        result.index.sha256,
        size,
        [part.name for part in result.index.parts],
        str(result.index_path),
        str(result.envelope_path) if result.envelope_path else None,
    )
    emit(parts, output_format, BUNDLE_SPLIT)


@app.command("join")
def join(
    index: Path = typer.Argument(..., help="NAME.parts.json written by `bundle split`."),
    output: Path = typer.Option(..., "--output", help="The bundle to write."),
    trust_root_path: Path | None = typer.Option(
        None,
        "--trust-root",
        help="Also require NAME.parts.dsse.json signed by a builder key (default: digests only).",
    ),
    output_format: OutputFormat = format_option(BUNDLE_JOINED),
) -> None:
    """Check every part, then join them (the parts are never modified or deleted)."""
    from ..bundle.media import join_parts
    from ..formats.trust_root import TrustRoot
    from ..formats.written import BundleJoined

    trust_root = TrustRoot.load(trust_root_path) if trust_root_path is not None else None
    extra = [trust_root_path] if trust_root_path is not None else []
    result = join_parts(index, output, trust_root=trust_root, extra_inputs=extra)
    joined = BundleJoined(
        str(result.output),
        result.sha256,
        result.size,
        list(result.checked),
        list(result.reused),
    )
    emit(joined, output_format, BUNDLE_JOINED)
