"""`stella function-map`: Generate and verify function maps."""

from __future__ import annotations

import typer

app = typer.Typer(help="Generate and verify function maps.", no_args_is_help=True)
