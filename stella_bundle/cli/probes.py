"""`stella probes`: eBPF probe objects and kernel feature detection."""

from __future__ import annotations

import typer

app = typer.Typer(help="eBPF probe objects and kernel feature detection.", no_args_is_help=True)
