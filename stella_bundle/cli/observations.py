"""`stella observations`: query collected observations and import external ones."""

from __future__ import annotations

import typer

app = typer.Typer(help="Query and import observation records.", no_args_is_help=True)

# Each command module registers itself on `app`, so it is imported after `app` exists.
from . import observations_import, observations_query, observations_timeline  # noqa: E402,F401
