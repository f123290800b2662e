"""`stella schema`: Validate documents against the shipped JSON Schemas."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ..errors import StellaError
from ..report.kinds import SCHEMAS
from ..report.registry import TextFormat
from ..schema import KINDS, schema_catalog, schema_text, validate_file
from .output import FORMAT_HELP, Format, console, emit, emit_json, format_option

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)


@app.command("validate")
def validate(
    file: Path = typer.Argument(
        ..., help="JSON document, statement, .dsse.json, or .ndjson[.zst]."
    ),
    kind: str | None = typer.Option(
        None, "--kind", help=f"Schema kind (default: detected): {', '.join(KINDS)}."
    ),
    output_format: Format = typer.Option(Format.table, "--format", help=FORMAT_HELP),
) -> None:
    """Validate FILE; a statement's or envelope's predicate is checked by its predicateType."""
    try:
        result = validate_file(file, kind)
    except StellaError as exc:
        if output_format is Format.json:
            emit_json(
                {
                    "valid": False,
                    "path": str(file),
                    "error": type(exc).__name__,
                    "message": exc.describe(),
                    "line": exc.line,
                    "field": exc.field,
                }
            )
        raise
    if output_format is Format.json:
        emit_json(result.to_dict())
        return
    what = {
        "ndjson": f"{result.documents} {result.kind} line{'s' if result.documents != 1 else ''}",
        "statement": f"{result.kind} statement",
        "dsse-envelope": f"{result.kind} in a DSSE envelope (signatures not checked)",
        "json": result.kind,
    }[result.container]
    console.print(f"[green]valid[/green] {file}: {what}")


@app.command("list")
def list_schemas(output_format: TextFormat = format_option(SCHEMAS)) -> None:
    """List the schema kinds shipped with this toolkit."""
    emit(schema_catalog(), output_format, SCHEMAS)


@app.command("show")
def show(kind: str = typer.Argument(..., help=f"One of: {', '.join(KINDS)}.")) -> None:
    """Print the JSON Schema of KIND, as shipped."""
    text = schema_text(kind)
    json.loads(text)  # a shipped schema is always JSON; fail loudly rather than print junk
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
