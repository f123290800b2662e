"""`stella demo`: the end-to-end demo on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from . import output


def demo(
    workspace: Path | None = typer.Option(
        None, "--workspace", help="Directory to work in (default: a new temporary directory)."
    ),
    recorded: bool = typer.Option(
        False, "--recorded", help="Use the recorded observations even where eBPF works."
    ),
) -> None:
    """Run the whole flow end to end in a temporary workspace and show the result."""
    from ..demo import run_demo

    console = output.console  # Rich, imported only now (not for `stella --help`)
    result = run_demo(
        workspace,
        say=lambda text: console.print(text, markup=False),
        show=console.print,
        force_recorded=recorded,
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)
