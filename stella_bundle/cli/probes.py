"""`stella probes`: eBPF probe objects and kernel feature detection."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..collector.features import DEFAULT_TRACEFS, detect
from ..report.kinds import PROBES
from ..report.registry import TextFormat
from .output import FORMAT_HELP, Format, console, emit, emit_json, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


@app.command("doctor")
def doctor(
    tracefs: Path = typer.Option(
        DEFAULT_TRACEFS, "--tracefs", help="Where tracefs should be mounted."
    ),
    output_format: Format = typer.Option(Format.table, "--format", help=FORMAT_HELP),
) -> None:
    """Kernel features for eBPF collection, every attach type tried by a trial load (available or
    not, with the errno and its meaning) and, per probe category, the attach type used and why.
    STELLA_PROBES_DISABLE=fentry,tp_btf counts the named types as unavailable (a test switch)."""
    from ..collector.plan import category_programs

    features = detect(tracefs)
    choices = features.choices(category_programs())
    if output_format is Format.json:
        emit_json(
            {
                "features": {
                    f.name: {"available": f.available, "detail": f.detail}
                    for f in features.features.values()
                },
                "attach_types": {
                    t.attach_type: {
                        "available": t.available,
                        "stage": t.stage,
                        "errno": t.errno,
                        "errno_name": t.errno_name,
                        "meaning": t.meaning,
                    }
                    for t in features.attach_types.values()
                },
                "categories": {
                    c.category: {"attach_type": c.attach_type, "reason": c.reason} for c in choices
                },
            }
        )
        return
    table = Table(title="kernel features")
    table.add_column("feature")
    table.add_column("status")
    table.add_column("detail")
    for feature in features.features.values():
        table.add_row(feature.name, "yes" if feature.available else "NO", feature.detail)
    console.print(table)
    trials = Table(title="attach types (each tried: a tiny program loaded and attached)")
    trials.add_column("attach type")
    trials.add_column("status")
    trials.add_column("evidence")
    for trial in features.attach_types.values():
        trials.add_row(trial.attach_type, "yes" if trial.available else "NO", trial.evidence())
    console.print(trials)
    plan = Table(title="probe categories")
    plan.add_column("category")
    plan.add_column("attach type")
    plan.add_column("why")
    for choice in choices:
        plan.add_row(choice.category, choice.attach_type or "none", choice.reason)
    console.print(plan)


@app.command("list")
def list_probes(
    probes_dir: Path | None = typer.Option(
        None, "--probes-dir", help="Objects and probes.lock.json (default: the installed set)."
    ),
    output_format: TextFormat = format_option(PROBES),
) -> None:
    """The probe objects, their sha256 (checked against the lock) and programs."""
    from ..collector.inventory import probe_inventory

    emit(probe_inventory(probes_dir), output_format, PROBES)
