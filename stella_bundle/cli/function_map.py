"""`stella function-map`: generate function maps from SBOMs and verify observations offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..canonical import canonical_bytes
from ..coverage import (
    VerificationResult,
    VerifyOptions,
    verify_map_files,
    verify_observations,
)
from ..coverage.inputs import check_one_source, iter_evidence_records, observation_paths
from ..errors import InputError
from ..fsutil import write_bytes_atomic
from ..functionmap.load import load_function_map
from ..heap import gc_paused
from ..report.kinds import COVERAGE, MAP_WRITTEN
from ..report.registry import OutputFormat, render
from .options import time_option
from .output import emit, error_line, format_option
from .store_options import config_option

if TYPE_CHECKING:
    from ..formats.trust_root import TrustRoot
    from ..functionmap.load import LoadedFunctionMap
    from ..store.base import ObservationStore

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


def _pairs(values: list[str], option: str, *, last: bool = False) -> list[tuple[str, str]]:
    """KEY=VALUE; with `last`, split at the last '=' (purls carry '=' in their qualifiers)."""
    pairs = []
    for value in values:
        key, sep, rest = value.rpartition("=") if last else value.partition("=")
        if not sep or not key or not rest:
            raise InputError(f"expected KEY=VALUE, found {value!r}", field=option)
        pairs.append((key, rest))
    return pairs


def _rate_pairs(values: list[str], option: str) -> dict[str, float]:
    rates = {}
    for key, value in _pairs(values, option):
        try:
            rates[key] = float(value)
        except ValueError as exc:
            raise InputError(f"expected a number for {key}, found {value!r}", field=option) from exc
    return rates


def _bool(value: str, option: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise InputError(f"expected true or false, found {value!r}", field=option)


@app.command("generate")
def generate(
    sbom: Path = typer.Option(..., "--sbom", help="CycloneDX JSON SBOM of the service."),
    service: str = typer.Option(..., "--service", help="Service name recorded in the map."),
    output: Path = typer.Option(..., "--output", help="Where to write function-map.json."),
    hot_functions: list[str] = typer.Option(
        [],
        "--hot-functions",
        help="Glob over TAG/SYMBOL or COMPONENT/SYMBOL (repeatable; default: every path found).",
    ),
    min_rate: float = typer.Option(0.95, "--min-rate", help="Minimum observation rate."),
    window: int = typer.Option(1800, "--window", help="Observation window in seconds."),
    build_id: str | None = typer.Option(
        None, "--build-id", help="Build identifier (default: sbom-<sha256 prefix of the SBOM>)."
    ),
    static_analysis: Path | None = typer.Option(
        None,
        "--static-analysis",
        help="Call graph JSON (schemas/static-callgraph.schema.json; default: none).",
    ),
    binary_path: list[str] = typer.Option(
        [],
        "--binary-path",
        help="PURL=PATH of an ELF file to check symbols in (repeatable; default: none, symbols "
        "unchecked).",
    ),
    tag_rate: list[str] = typer.Option(
        [], "--tag-rate", help="TAG=RATE minimum (repeatable; default: --min-rate for every tag)."
    ),
    optional: list[str] = typer.Option(
        [],
        "--optional",
        help="Glob of paths that are optional (repeatable; default: none, every path required).",
    ),
    image_digest: str | None = typer.Option(
        None, "--image-digest", help="sha256:… of the image (default: none recorded)."
    ),
    scope: list[str] = typer.Option(
        [],
        "--scope",
        help="The workload whose records count: executable=PATH, systemd_unit=UNIT, "
        "container_name=GLOB or image_digest=sha256:… (repeatable, all must match; default: "
        "none, collected host-wide with a warning).",
    ),
    fail_on_unexpected: str = typer.Option(
        "true", "--fail-on-unexpected", help="true|false: unexpected symbols fail verification."
    ),
    kernel_events: list[str] = typer.Option(
        [],
        "--kernel-events",
        help="Add kernel-level paths observed by tracepoints/kprobes: file, exec, net (repeatable; "
        "default: none).",
    ),
    catalog: list[Path] = typer.Option(
        [],
        "--catalog",
        help="Extra symbol catalog JSON (same shape as the built-in one; default: the built-in only).",
    ),
    sign_key: Path | None = typer.Option(
        None,
        "--sign-key",
        help="Sign: writes <output>.dsse.json beside the map (default: unsigned).",
    ),
    output_format: OutputFormat = format_option(MAP_WRITTEN),
) -> None:
    """Generate a function map (an in-toto Statement) from an SBOM."""
    from ..attest.dsse import sign_statement
    from ..attest.keys import load_signer
    from ..attest.signing import write_envelope
    from ..functionmap.generate import GenerateOptions, generate_function_map, signature_path

    options = GenerateOptions(
        sbom=sbom,
        service=service,
        hot_functions=list(hot_functions),
        min_rate=min_rate,
        window_seconds=window,
        build_id=build_id,
        static_analysis=static_analysis,
        binary_paths=dict(_pairs(list(binary_path), "--binary-path", last=True)),
        tag_rates=_rate_pairs(list(tag_rate), "--tag-rate"),
        optional=list(optional),
        image_digest=image_digest,
        fail_on_unexpected=_bool(fail_on_unexpected, "--fail-on-unexpected"),
        scope=dict(_pairs(list(scope), "--scope")),
        catalogs=list(catalog),
        kernel_events=[e for value in kernel_events for e in value.split(",") if e],
    )
    signer = load_signer(sign_key) if sign_key is not None else None
    result = generate_function_map(options)
    data = canonical_bytes(result.statement)
    write_bytes_atomic(output, data)
    envelope_path = None
    if signer is not None:
        envelope_path = signature_path(output)
        write_envelope(envelope_path, sign_statement(result.statement, [signer]))
    emit(result.written(output, envelope_path), output_format, MAP_WRITTEN)
    for item in result.not_observable:
        error_line(
            f"not observable: {item.purl} {item.symbol} is not defined in {item.binary_path} "
            f"(paths dropped: {', '.join(item.path_ids)})"
        )
    for warning in result.warnings:
        error_line(f"warning: {warning}")


def _load_trust_root(path: Path | None) -> TrustRoot | None:
    if path is None:
        return None
    # Imported only then: the trust root pulls in securesystemslib (≈0.1 s).
    from ..formats.trust_root import TrustRoot

    return TrustRoot.load(path)


def _verify_observation_files(
    function_map: Path, observations: list[Path], options: VerifyOptions, root: TrustRoot | None
) -> tuple[LoadedFunctionMap, VerificationResult]:
    """The map and its verdict on NDJSON files: the scan starts while the map is read
    (verify_map_files); the map's errors still come first, then a missing file's."""
    if not all(path.is_file() for path in observations):
        load_function_map(function_map, root)
        observation_paths(observations)  # raises, naming the missing file
    return verify_map_files(function_map, observations, options, root)


@app.command("verify")
def verify(
    function_map: Path = typer.Option(
        ..., "--function-map", help="function-map.json or function-map.dsse.json."
    ),
    observations: list[Path] = typer.Option(
        [],
        "--observations",
        help="NDJSON observation file, plain or .zst (repeatable; default: none, give this or "
        "--evidence).",
    ),
    evidence: Path | None = typer.Option(
        None,
        "--evidence",
        help="Evidence directory (<chain_id>/<seq>.ndjson.zst chunks; default: none).",
    ),
    window_from: str | None = typer.Option(
        None,
        "--from",
        help="Ignore observations before this RFC 3339 time (default: the map's window).",
    ),
    window_to: str | None = typer.Option(
        None,
        "--to",
        help="Ignore observations after this RFC 3339 time (default: the map's window).",
    ),
    output_format: OutputFormat = format_option(COVERAGE),
    output: Path | None = typer.Option(
        None, "--output", help="Also write the JSON result here (default: not written)."
    ),
    fail_on_unexpected: str | None = typer.Option(
        None, "--fail-on-unexpected", help="true|false (default: the map's setting)."
    ),
    trust_root: Path | None = typer.Option(
        None,
        "--trust-root",
        help="Require the map's DSSE signature by the function-map role (default: not checked).",
    ),
    probe_weight: list[str] = typer.Option(
        [],
        "--probe-weight",
        help="TYPE=WEIGHT confidence weight override (repeatable; default: the built-in weights).",
    ),
    workers: int | None = typer.Option(None, "--workers", help="Scan processes (default: CPUs)."),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Verify the observations stored here over --from/--to, aggregated by the store "
        "(sqlite:///PATH, postgresql://…; default: none, files or --evidence). The map and the "
        "report are stored too.",
    ),
    config: Path | None = config_option(),
) -> int:
    """Verify observations against a function map, offline. Exit 0 verified, 1 not."""
    # The collector paused for the whole command (heap.gc_paused): the map, the per-node states
    # and the report hold no cycles, and their objects die inside `_verify`, so that the
    # collection after the pause has few to walk (it walked them all, ~0.05 s, when the pause
    # ended with the verification).
    with gc_paused():
        return _verify(
            function_map, observations, evidence, window_from, window_to, output_format,
            output, fail_on_unexpected, trust_root, probe_weight, workers, store, config,
        )  # fmt: skip


def _verify(
    function_map: Path,
    observations: list[Path],
    evidence: Path | None,
    window_from: str | None,
    window_to: str | None,
    output_format: OutputFormat,
    output: Path | None,
    fail_on_unexpected: str | None,
    trust_root: Path | None,
    probe_weight: list[str],
    workers: int | None,
    store: str | None,
    config: Path | None,
) -> int:
    root = _load_trust_root(trust_root)
    options = VerifyOptions(
        window_from=time_option(window_from, "--from"),
        window_to=time_option(window_to, "--to"),
        fail_on_unexpected=(
            _bool(fail_on_unexpected, "--fail-on-unexpected")
            if fail_on_unexpected is not None
            else None
        ),
        probe_weights=_rate_pairs(list(probe_weight), "--probe-weight"),
        workers=workers,
    )
    opened: ObservationStore | None = None
    if observations and evidence is None and store is None and config is None:
        loaded, result = _verify_observation_files(function_map, observations, options, root)
    elif store is not None or config is not None:
        loaded = load_function_map(function_map, root)
        from ..store import open_store, verify_stored
        from ..store.config import store_settings

        if observations or evidence is not None:
            raise InputError("give --store (or --config) or --observations/--evidence, not both")
        opened = open_store(store_settings(store, config).url)
        try:
            # Only the aggregation runs in the database; the verdict is the file path's.
            result = verify_stored(opened, loaded, options)
        except BaseException:
            opened.close()
            raise
    else:
        loaded = load_function_map(function_map, root)
        check_one_source(list(observations), evidence)
        assert evidence is not None
        # Sealed chunks through the evidence reader (digests checked against the seals).
        result = verify_observations(
            loaded, iter_evidence_records(evidence), options, source=str(evidence), validated=True
        )
    report = result.report()
    if opened is not None:
        # The map by its digest (envelope kept when signed) and the report, for the API.
        from ..store import stored_form

        with opened:
            opened.put_function_map(stored_form(loaded, function_map.read_bytes()))
            window = result.window
            opened.put_report(
                loaded.digest, window["from"], window["to"], result.verified, report.to_dict()
            )
    if output is not None:
        write_bytes_atomic(output, render(report, "json", COVERAGE).encode("utf-8"))
    emit(report, output_format, COVERAGE)
    for warning in result.warnings:
        error_line(f"WARNING: {warning}")
    if loaded.signed and not loaded.signature_checked:
        error_line("note: the function map's signature was not checked (no --trust-root given)")
    return 0 if result.verified else 1
