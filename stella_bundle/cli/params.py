"""Option values converted without a pydantic `TypeAdapter` per parameter.

Typer (0.20+) converts every parameter's value through a pydantic `TypeAdapter` built when the
command runs; importing pydantic and building the adapters costs ~0.15 s of CPU on every
command, a tenth of a 300,000-record `bundle verify`. For the plain types stella's commands use
(str, int, Path, an Enum of choices, a list of these) the adapters only call typer's own helpers
(`_parse_cli_str`, `coerce_cli_path`, `coerce_cli_choice`) around the identity; `plain_params`
gives such parameters a converter that calls those helpers directly: the same values, the same
error messages (tests/cli/test_cli_params.py compares them), the same help; pydantic is then never imported.
Any other type or value, a custom parser, or a typer without these internals keeps typer's own
conversion. `install` is called when `stella_bundle.cli` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

try:  # typer's conversion internals (typer >= 0.20); without them nothing is changed
    from typer._click.exceptions import BadParameter
    from typer._click.utils import _escape_control_characters
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import (
        coerce_cli_choice,
        coerce_cli_path,
        lenient_issubclass,
        routes_to_path,
    )
    from typer.core import _TyperParameter

    _AVAILABLE = True
except ImportError:  # pragma: no cover - an older typer converts with click's types
    _AVAILABLE = False

Convert = Callable[[Any, Any, Any], Any]  # (value, param, ctx) -> the converted value


def install() -> None:
    """Make typer build the direct converter for every parameter of a plain type (typer
    builds a parameter's converter when the command first runs: `get_runtime_param`)."""
    if not _AVAILABLE or not hasattr(_TyperParameter, "get_runtime_param"):  # pragma: no cover
        return
    if [f.name for f in fields(RuntimeParam)] != ["parameter_info", "annotation"]:
        return  # pragma: no cover - another typer's internals: its own conversion
    typer_builds = _TyperParameter.get_runtime_param

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            descriptor = self.type_descriptor
            convert = None
            if descriptor.file_annotation is None:
                convert = _converter(descriptor.annotation, descriptor.parameter_info)
            if convert is None:
                return typer_builds(self)
            self._runtime_param = _PlainParam(
                descriptor.parameter_info, descriptor.annotation, convert
            )
        return self._runtime_param

    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]


if _AVAILABLE:

    @dataclass(frozen=True)
    class _PlainParam(RuntimeParam):
        convert: Convert

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            return self.convert(value, param, ctx)


def _converter(annotation: Any, info: Any) -> Convert | None:
    if info.parser is not None:
        return None
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        leaf = _leaf(item, info)
        if leaf is None:
            return None

        def convert_list(value: Any, param: Any, ctx: Any) -> list[Any]:
            items = value if isinstance(value, list | tuple) else [value]
            return [leaf(one, param, ctx) for one in items]

        return convert_list
    return _leaf(annotation, info)


def _leaf(annotation: Any, info: Any) -> Convert | None:
    if lenient_issubclass(annotation, Enum):
        choices = list(annotation)
        case_sensitive = info.case_sensitive

        def convert_choice(value: Any, param: Any, ctx: Any) -> Any:
            try:
                return coerce_cli_choice(
                    value, choices=choices, case_sensitive=case_sensitive, ctx=ctx
                )
            except ValueError as exc:
                raise _value_error(exc, param, ctx) from exc

        return convert_choice
    if annotation is bool:  # a flag yields a bool (or None: no converter is called)

        def convert_bool(value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, bool):
                return value
            return _by_typer(annotation, info, value, param, ctx)

        return convert_bool
    if annotation is int and info.min is None and info.max is None:

        def convert_int(value: Any, param: Any, ctx: Any) -> Any:
            # ASCII digits are what pydantic's lax int makes int() of; any other spelling
            # (signs, spaces, underscores, "1.0", other scripts' digits) is typer's to judge.
            if type(value) is int:
                return value
            if isinstance(value, str) and value.isascii() and value.isdigit():
                return int(value)
            return _by_typer(annotation, info, value, param, ctx)

        return convert_int
    if annotation is str:

        def convert_str(value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, str):
                return value
            return _by_typer(annotation, info, value, param, ctx)

        return convert_str
    if (
        lenient_issubclass(annotation, Path)
        and routes_to_path(annotation, info)
        and not info.allow_dash  # "-" is recognised in the raw value: typer's own path
    ):
        path_type = info.path_type or annotation

        def convert_path(value: Any, param: Any, ctx: Any) -> Any:
            if not isinstance(value, str | Path) or not lenient_issubclass(path_type, Path):
                return _by_typer(annotation, info, value, param, ctx)
            # What pydantic's Path validation makes of a str, then typer's own checks.
            value = value if isinstance(value, path_type) else path_type(value)
            try:
                return coerce_cli_path(value, info, path_type=path_type, param=param, ctx=ctx)
            except ValueError as exc:  # os.stat of a path holding a NUL
                raise _value_error(exc, param, ctx) from exc

        return convert_path
    return None


def _value_error(exc: ValueError, param: Any, ctx: Any) -> Exception:
    """A validator's ValueError, worded as typer words it through pydantic."""
    return BadParameter(_escape_control_characters(f"Value error, {exc}"), ctx=ctx, param=param)


def _by_typer(annotation: Any, info: Any, value: Any, param: Any, ctx: Any) -> Any:
    """A value of an unusual type (never one from the command line): typer converts it."""
    from typer._coercion import resolve_type_descriptor

    runtime = build_runtime_param(resolve_type_descriptor(annotation, info))
    return runtime._coerce_value(value, param=param, ctx=ctx)
