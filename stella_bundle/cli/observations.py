"""`stella observations`: query collected observations and import external ones."""

from __future__ import annotations

import typer

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(no_args_is_help=True)

# Each command module registers itself on `app`, so it is imported after `app` exists.
from . import (  # noqa: E402
    observations_import,  # noqa: F401
    observations_query,  # noqa: F401
    observations_store,  # noqa: F401
    observations_timeline,  # noqa: F401
)
