"""Shared CLI output: a stdout console for results, stderr for diagnostics, JSON for machines."""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console


@dataclass
class _State:
    verbose: bool = False


state = _State()

# emoji=False: ":AB:" in a hex fingerprint must not turn into an emoji.
console = Console(highlight=False, soft_wrap=True, emoji=False)
error_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


class Format(enum.StrEnum):
    table = "table"
    json = "json"


# The help of every `--format` option: what each choice is for (typer shows the default).
FORMAT_HELP = "table for people, json for programs."


def error_line(message: str) -> None:
    """One plain line on stderr (no markup: messages may contain brackets)."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    sys.stdout.flush()
