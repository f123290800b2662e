"""`stella demo`: the end-to-end demo on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from ..demo import run_demo
from .output import console


def demo(
    workspace: Path | None = typer.Option(
        None, "--workspace", help="Directory to work in (default: a new temporary directory)."
    ),
) -> None:
    """Run the whole flow end to end in a temporary workspace and show the result."""
    run_demo(workspace, say=console.print)
