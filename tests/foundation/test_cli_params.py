"""`cli/params.py` converts every plain parameter of every command as typer's adapters do, and a
command that runs never imports pydantic (its import and the adapters were ~0.15 s of start-up)."""

from __future__ import annotations

import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from test_cli_help import PARAMETERS, ROOT
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param
from typer.core import _TyperParameter

from stella_bundle.cli import params

PLAIN = [
    (name, param)
    for name, param in PARAMETERS
    if isinstance(param, _TyperParameter)
    and param.type_descriptor.file_annotation is None
    and params._converter(param.type_descriptor.annotation, param.type_descriptor.parameter_info)
    is not None
]


def _samples(annotation: Any) -> list[Any]:
    if get_origin(annotation) is list:
        leaf = _samples(get_args(annotation)[0])
        return [leaf[:2], tuple(leaf[:1]), leaf[0], []]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        values = [str(choice.value) for choice in annotation]
        return [*values, *(v.upper() for v in values), next(iter(annotation)), "nope", "\x1b[31mx"]
    if annotation is bool:
        return [True, False]
    if annotation is str:
        return ["x", "", "é ü", "a\tb"]
    if annotation is int:
        return ["2", "007", "0", "123456789012345678901234", 5, " 3", "+4", "-2", "1_000", "1.0",
                "1.5", "x", "", "\u0663", "0x10"]  # fmt: skip
    return ["evidence", "", "a/b", "~/x", "-", "./", Path("p"), "a\x00b"]


def _outcome(convert: Any, value: Any) -> tuple[str, Any]:
    try:
        result = convert(value)
    except BadParameter as exc:
        return "error", exc.format_message()
    except ValueError as exc:  # a NUL in a path: os.stat refuses it
        return "value-error", str(exc)
    return "value", (type(result), result)


def test_every_command_has_plain_parameters() -> None:
    # Paths, strings, choices, lists of paths and flags: what stella's commands take.
    assert len(PLAIN) > 100


@pytest.mark.parametrize(("name", "param"), PLAIN, ids=[name for name, _ in PLAIN])
def test_plain_conversion_is_typers(name: str, param: Any) -> None:
    descriptor = param.type_descriptor
    convert = params._converter(descriptor.annotation, descriptor.parameter_info)
    assert convert is not None
    typers = build_runtime_param(descriptor)
    context = Context(ROOT)
    for value in _samples(descriptor.annotation):
        plain = _outcome(lambda v: convert(v, param, context), value)
        typer = _outcome(lambda v: typers._coerce_value(v, param=param, ctx=context), value)
        assert plain == typer, (name, value)


@pytest.mark.parametrize(
    "command",
    [
        ["bundle", "verify", "none.stella.bundle.tgz", "--trust-root", "trust-root.json"],
        # An int option too (--workers: typer converts ints through pydantic).
        [
            *("function-map", "verify", "--function-map", "map.json"),
            *("--observations", "o.ndjson", "--workers", "2"),
        ],
    ],
    ids=["bundle-verify", "function-map-verify"],
)
def test_a_command_runs_without_pydantic(tmp_path: Path, command: list[str]) -> None:
    args = [str(tmp_path / a) if "." in a and a != "2" else a for a in command]
    script = (
        "import sys\n"
        "from stella_bundle.cli import main\n"
        f"code = main({[*args, '--format', 'json']!r})\n"
        "assert code == 2, code\n"
        "assert 'pydantic' not in sys.modules, 'pydantic imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
