"""`stella signals`: Evidence chains: collect, verify, inspect, prune."""

from __future__ import annotations

import typer

app = typer.Typer(help="Evidence chains: collect, verify, inspect, prune.", no_args_is_help=True)
from . import signals_start  # noqa: E402,F401
