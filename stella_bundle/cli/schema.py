"""`stella schema`: Validate documents against the shipped JSON Schemas."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ..errors import StellaError
from ..report.kinds import SCHEMA_VALIDATION, SCHEMAS
from ..report.registry import OutputFormat
from ..schema import (
    KINDS,
    SchemaValidation,
    ValidationRefusal,
    schema_catalog,
    schema_text,
    validate_file,
)
from .output import emit, format_option

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
    output_format: OutputFormat = format_option(SCHEMA_VALIDATION),
) -> None:
    """Validate FILE; a statement's or envelope's predicate is checked by its predicateType."""
    try:
        result = validate_file(file, kind)
    except StellaError as exc:
        # A program reading JSON learns why on stdout too; for people the error line suffices.
        if output_format == OutputFormat.json:
            emit(
                SchemaValidation(ValidationRefusal.of(file, exc)), output_format, SCHEMA_VALIDATION
            )
        raise
    emit(SchemaValidation(result), output_format, SCHEMA_VALIDATION)


@app.command("list")
def list_schemas(output_format: OutputFormat = format_option(SCHEMAS)) -> None:
    """List the schema kinds shipped with this toolkit."""
    emit(schema_catalog(), output_format, SCHEMAS)


@app.command("show")
def show(kind: str = typer.Argument(..., help=f"One of: {', '.join(KINDS)}.")) -> None:
    """Print the JSON Schema of KIND, as shipped."""
    text = schema_text(kind)
    json.loads(text)  # a shipped schema is always JSON; fail loudly rather than print junk
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
