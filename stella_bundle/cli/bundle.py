"""`stella bundle`: Build, inspect, split, join and verify .stella.bundle.tgz archives."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Build, inspect, split, join and verify .stella.bundle.tgz archives.", no_args_is_help=True
)
