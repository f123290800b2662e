"""Shared CLI output: results through the report registry (`emit`), diagnostics on stderr."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ..report.registry import Result, ResultKind


@dataclass
class _State:
    verbose: bool = False


state = _State()

if TYPE_CHECKING:
    console: Console
    error_console: Console


def __getattr__(name: str) -> Any:
    """`console` and `error_console`, made at first use: importing Rich is ~0.1 s that
    `stella --help` and every command printing no table would spend for nothing."""
    if name not in ("console", "error_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    # emoji=False: ":AB:" in a hex fingerprint must not turn into an emoji.
    made = Console(stderr=name == "error_console", highlight=False, soft_wrap=True, emoji=False)
    globals()[name] = made
    return made


def format_option(kind: ResultKind) -> Any:
    """`--format` of a command printing a result of this kind: its formats from the registry
    (annotate it OutputFormat; tests/report checks)."""
    from ..report.registry import format_help

    return typer.Option("table", "--format", help=format_help(kind))


def emit(result: Result, output_format: str, kind: ResultKind) -> None:
    """The one way a command prints its result: through the report registry."""
    from ..report.registry import emit as emit_result

    # Tables through the lazily made stdout console (module globals skip __getattr__); made
    # only for a table: Rich's console is ~0.1 s of imports a JSON or HTML answer does not use.
    console = __getattr__("console") if output_format == "table" else None
    emit_result(result, output_format, kind, console)


def error_line(message: str) -> None:
    """One plain line on stderr (no markup: messages may contain brackets)."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
