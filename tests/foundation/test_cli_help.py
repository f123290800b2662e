"""Every command, option and argument of `stella` says what it does, and every option its default.

The test walks the command tree Typer builds (click's), so an option added later without help
fails here rather than reaching a user as a blank line of `--help`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main

from stella_bundle.cli.app import app

ROOT = typer.main.get_command(app)


def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    yield " ".join(path), command
    if not hasattr(command, "list_commands"):
        return
    context = command.make_context(path[-1], [], resilient_parsing=True)
    for name in sorted(command.list_commands(context)):  # groups are loaded on demand
        yield from _commands(command.get_command(context, name), (*path, name))


COMMANDS = list(_commands(ROOT, ("stella",)))
PARAMETERS = [
    (f"{path} {param.opts[0] if param.opts else param.name}", param)
    for path, command in COMMANDS
    for param in command.params
]


def _states_default(param: Any) -> bool:
    """`--help` shows `[default: …]`, or the help text says what applies when it is omitted."""
    if param.required or (param.is_flag and not param.default):
        return True  # required: no default; a flag: off unless given
    shown = param.show_default is not False and param.default not in (None, (), [])
    return shown or "default" in (param.help or "").lower()


def test_the_walk_reaches_every_command_group() -> None:
    paths = {path for path, _ in COMMANDS}
    assert {"stella observations import", "stella bundle verify", "stella signals start"} <= paths
    assert len(PARAMETERS) > 150


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_has_help(path: str, command: Any) -> None:
    assert (command.help or "").strip(), f"{path}: no help text"


@pytest.mark.parametrize(("name", "param"), PARAMETERS, ids=[n for n, _ in PARAMETERS])
def test_every_option_and_argument_says_what_it_does(name: str, param: Any) -> None:
    assert (getattr(param, "help", None) or "").strip(), f"{name}: no help text"


@pytest.mark.parametrize(
    ("name", "param"),
    [(n, p) for n, p in PARAMETERS if p.param_type_name == "option"],
    ids=[n for n, p in PARAMETERS if p.param_type_name == "option"],
)
def test_every_option_states_its_default(name: str, param: Any) -> None:
    assert _states_default(param), f"{name}: help does not say its default ({param.help!r})"


def test_import_help_shows_the_rotation_options_with_their_defaults(run_cli: Any) -> None:
    shown = run_cli("observations", "import", "--help")
    assert shown.exit_code == 0
    text = " ".join(shown.stdout.split())
    for option in ("--max-size-mb", "--max-age-seconds", "--max-records", "--zstd-level"):
        assert option in text
    assert text.count("default") >= 8


def test_stella_help_imports_no_command_group() -> None:
    """`stella --help` lists the groups without importing them, nor Rich (made at first use by
    `cli.output`), nor Rich's help renderer (start-up time, issue 15)."""
    import subprocess
    import sys

    probe = (
        "import sys; from stella_bundle.cli import main; main(['--help']);"
        "print(sorted(m for m in sys.modules if m.startswith('stella_bundle.') and"
        " m.split('.')[1] not in ('cli', 'errors')) or 'none',"
        " [m for m in ('boto3', 'sigstore', 'jsonschema', 'typer.rich_utils', 'markdown_it', 'rich')"
        " if m in sys.modules] or 'none')"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last == "none none", last
    assert "bundle" in result.stdout and "trust-root" in result.stdout


def test_every_group_help_is_shown_by_the_group_itself() -> None:
    from stella_bundle.cli.app import GROUPS

    for name, group in GROUPS.items():
        assert group.load(name).help == group.help
