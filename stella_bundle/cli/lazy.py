"""Command groups imported only when they run, so `stella --help` and each command start fast.

Importing every group pulls in the whole library (Sigstore, securesystemslib's signers, which
import boto3 where it is installed, jsonschema, msgspec…): most of the start-up time. The root
group lists the groups from a table of names and one-line helps and imports a group's module
only when that group is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
import typer.core
import typer.main


@dataclass(frozen=True)
class LazyGroup:
    """A command group: where its Typer app lives and the one line `stella --help` shows."""

    module: str
    help: str

    def load(self, name: str) -> Any:
        module = importlib.import_module(self.module)
        command = typer.main.get_group(module.app)  # as a subgroup: no completion options
        command.name = name
        command.help = self.help  # the table is the one place a group's help is written
        return command


class LazyRootGroup(typer.core.TyperGroup):
    """The root group: eagerly registered commands plus the lazy groups of `lazy_groups`."""

    lazy_groups: ClassVar[dict[str, LazyGroup]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, Any] = {}
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_groups})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        eager = super().get_command(ctx, cmd_name)
        if eager is not None:
            return eager
        group = self.lazy_groups.get(cmd_name)
        if group is None:
            return None
        if self._listing:  # the root's help needs a name and a line, not the module
            return typer.core.TyperGroup(name=cmd_name, help=group.help, short_help=group.help)
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = group.load(cmd_name)
        return self._loaded[cmd_name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
