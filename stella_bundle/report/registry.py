"""Output formats: every command that prints a result renders one typed result model through
one registry of formatters (pip-audit's shape: a result model, pluggable formats).

A result model has `to_dict()` (its JSON, the same document the API answers) and a strict
`from_dict()`; a `ResultKind` names the model and its views (a rich table, and for reports an
HTML page), by "module:name" so nothing heavy is imported until a result is printed. A format is
one entry of `FORMATS`: its help and a factory giving the kind's formatter (a kind without a
page of its own renders its table as a page). Adding a format is adding an entry; the CLI only wires
(`emit(result, output_format, KIND)`).
"""

from __future__ import annotations

import enum
import importlib
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..errors import InputError, InternalError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType


class Result(Protocol):
    """A typed result: its JSON document. A model whose JSON should be written compact (a
    10,000-path report) says so with a true `json_compact` attribute."""

    def to_dict(self) -> dict[str, Any]: ...


class Formatter(Protocol):
    def render(self, result: Any) -> str: ...


class OutputFormat(enum.StrEnum):
    """The `--format` choices: every kind renders in each (tests/report checks)."""

    table = "table"
    json = "json"
    html = "html"


def _resolve(reference: str) -> Any:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ResultKind:
    """One kind of result: its model and its views ("module:name", imported when used)."""

    name: str  # for messages: "function-map verification"
    model: str  # the typed result: to_dict / from_dict
    table: str  # result -> rich renderable
    html: str | None = None  # result -> its own page; None: the table as a page

    def model_class(self) -> type[Any]:
        model: type[Any] = _resolve(self.model)
        return model

    def view(self, reference: str) -> Callable[[Any], Any]:
        view: Callable[[Any], Any] = _resolve(reference)
        return view

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(FORMATS)


class JsonFormatter:
    """The model's `to_dict`, keys sorted, indented unless the model asks for compact.

    Compact JSON (a 10,000-path report, 9 MB) is orjson's, in one C call: no space after `,`
    and `:`, floats in their shortest round-trip form (`0.00001`, not `1e-05`). What orjson
    refuses (integers beyond 64 bits, keys that are not strings, lone surrogates) is written by
    the standard library with the same separators."""

    def render(self, result: Any) -> str:
        document = result.to_dict()
        if not getattr(result, "json_compact", False):
            return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        import orjson  # only here: most commands print indented JSON

        try:
            return orjson.dumps(
                document, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
            ).decode("utf-8")
        except orjson.JSONEncodeError:
            text = json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
            return text + "\n"


def plain_console(file: io.StringIO) -> Console:
    from rich.console import Console

    # emoji=False: ":AB:" in a hex fingerprint must not turn into an emoji.
    return Console(
        file=file, width=160, color_system=None, highlight=False, soft_wrap=True, emoji=False
    )


class TableFormatter:
    """Rich tables for people; `renderable` for a terminal (colours), `render` as plain text."""

    def __init__(self, view: Callable[[Any], RenderableType]) -> None:
        self.view = view

    def renderable(self, result: Any) -> RenderableType:
        return self.view(result)

    def render(self, result: Any) -> str:
        buffer = io.StringIO()
        plain_console(buffer).print(self.renderable(result))
        return buffer.getvalue()


class HtmlFormatter:
    def __init__(self, view: Callable[[Any], str]) -> None:
        self.view = view

    def render(self, result: Any) -> str:
        return self.view(result)


# Rich's export template with a title; inline styles, no script, nothing fetched (air-gapped).
_TABLE_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{{{ color: {{foreground}}; background-color: {{background}}; }}}}
</style>
</head>
<body>
<h1 style="font-family:sans-serif;font-size:1.2em">{title}</h1>
<pre style="font-family:'DejaVu Sans Mono',Menlo,consolas,monospace"><code>{{code}}</code></pre>
</body>
</html>
"""


class TablePageFormatter:
    """A kind without a page of its own: its table, exported by Rich as one self-contained
    HTML page (the same rows and figures as `--format table`, colours as inline styles)."""

    def __init__(self, view: Callable[[Any], RenderableType], title: str) -> None:
        self.view = view
        self.title = title

    def render(self, result: Any) -> str:
        from html import escape

        from rich.console import Console

        console = Console(
            file=io.StringIO(),
            record=True,
            width=160,
            color_system="truecolor",
            highlight=False,
            soft_wrap=True,
            emoji=False,
        )
        console.print(self.view(result))
        page = _TABLE_PAGE.format(title=escape(self.title[:1].upper() + self.title[1:]))
        return console.export_html(inline_styles=True, code_format=page)


@dataclass(frozen=True)
class FormatSpec:
    help: str
    make: Callable[[ResultKind], Formatter]


def _json(kind: ResultKind) -> Formatter:
    return JsonFormatter()


def _table(kind: ResultKind) -> Formatter:
    return TableFormatter(kind.view(kind.table))


def _html(kind: ResultKind) -> Formatter:
    if kind.html is None:
        return TablePageFormatter(kind.view(kind.table), kind.name)
    return HtmlFormatter(kind.view(kind.html))


FORMATS: Final[dict[str, FormatSpec]] = {
    "table": FormatSpec("for people", _table),
    "json": FormatSpec("for programs (the model's JSON, the API's document)", _json),
    "html": FormatSpec("one self-contained page", _html),
}


def format_help(kind: ResultKind) -> str:
    """The help of a `--format` option: each of the kind's formats and what it is for."""
    return "; ".join(f"{name} {FORMATS[name].help}" for name in kind.formats) + "."


def formatter_for(name: str, kind: ResultKind) -> Formatter:
    """The formatter of `name` for this kind; an unknown name is bad input (exit 2), one line
    naming the choices."""
    spec = FORMATS.get(str(name))
    if spec is None:
        raise InputError(
            f"unknown format {str(name)!r} for a {kind.name}: expected one of "
            f"{', '.join(kind.formats)}",
            field="--format",
        )
    return spec.make(kind)


def render(result: Result, name: str, kind: ResultKind) -> str:
    _check_model(result, kind)
    return formatter_for(name, kind).render(result)


def emit(result: Result, name: str, kind: ResultKind, console: Console | None = None) -> None:
    """Print the result on stdout in the format asked for. Tables go through `console` (the
    CLI's, so a terminal gets colours); every other format is written as text."""
    _check_model(result, kind)
    formatter = formatter_for(name, kind)
    if isinstance(formatter, TableFormatter) and console is not None:
        console.print(formatter.renderable(result))
        return
    sys.stdout.write(formatter.render(result))
    sys.stdout.flush()


def _check_model(result: Result, kind: ResultKind) -> None:
    model = kind.model_class()
    if not isinstance(result, model):
        # A command printing a result that is not its kind's model: our bug, not the input.
        raise InternalError(f"a {kind.name} is a {model.__name__}, not a {type(result).__name__}")
