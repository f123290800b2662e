"""`stella schema`: Validate documents against the shipped JSON Schemas."""

from __future__ import annotations

import typer

app = typer.Typer(help="Validate documents against the shipped JSON Schemas.", no_args_is_help=True)
