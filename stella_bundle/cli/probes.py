"""`stella probes`: eBPF probe objects and kernel feature detection."""

from __future__ import annotations

from pathlib import Path

import typer

from ..collector.features import DEFAULT_TRACEFS, detect
from ..report.kinds import DOCTOR, PROBES
from ..report.registry import OutputFormat
from .output import emit, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


@app.command("doctor")
def doctor(
    tracefs: Path = typer.Option(
        DEFAULT_TRACEFS, "--tracefs", help="Where tracefs should be mounted."
    ),
    output_format: OutputFormat = format_option(DOCTOR),
) -> None:
    """Kernel features for eBPF collection, every attach type tried by a trial load (available or
    not, with the errno and its meaning) and, per probe category, the attach type used and why.
    STELLA_PROBES_DISABLE=fentry,tp_btf counts the named types as unavailable (a test switch)."""
    from ..collector.doctor import KernelDoctor
    from ..collector.plan import category_programs

    features = detect(tracefs)
    emit(KernelDoctor.of(features, features.choices(category_programs())), output_format, DOCTOR)


@app.command("list")
def list_probes(
    probes_dir: Path | None = typer.Option(
        None, "--probes-dir", help="Objects and probes.lock.json (default: the installed set)."
    ),
    output_format: OutputFormat = format_option(PROBES),
) -> None:
    """The probe objects, their sha256 (checked against the lock) and programs."""
    from ..collector.inventory import probe_inventory

    emit(probe_inventory(probes_dir), output_format, PROBES)
