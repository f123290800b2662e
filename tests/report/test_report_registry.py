"""The report registry: formats, refusals, and every kind's views resolvable."""

from __future__ import annotations

from typing import Any

import pytest
from report_support import Inputs, verify_map

from stella_bundle.errors import InputError, InternalError
from stella_bundle.report import kinds
from stella_bundle.report.registry import FORMATS, ResultKind, formatter_for, render

KINDS = [value for value in vars(kinds).values() if isinstance(value, ResultKind)]


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_kind_resolves_its_model_and_views(kind: ResultKind) -> None:
    model = kind.model_class()
    assert callable(model.from_dict) and callable(model.to_dict)
    assert callable(kind.view(kind.table))
    assert kind.formats == ("table", "json", "html")
    for name in kind.formats:
        assert formatter_for(name, kind) is not None


def test_an_unknown_format_is_refused_in_one_line() -> None:
    with pytest.raises(InputError) as caught:
        formatter_for("xml", kinds.COVERAGE)
    assert "\n" not in caught.value.describe()
    assert "expected one of table, json, html" in caught.value.describe()
    assert set(FORMATS) == {"table", "json", "html"}


def test_a_result_of_another_kind_is_an_internal_error() -> None:
    with pytest.raises(InternalError):
        render({"not": "a report"}, "json", kinds.COVERAGE)  # type: ignore[arg-type]


def test_unknown_format_on_the_command_line(run_cli: Any, inputs: Inputs) -> None:
    result = verify_map(run_cli, inputs, "--format", "xml")
    assert result.exit_code == 2  # bad input: not 0 verified, 1 not verified, 3 our bug
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: Invalid value for '--format': 'xml' is not one of")


class _Compact:
    json_compact = True

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def to_dict(self) -> dict[str, Any]:
        return self.document


@pytest.mark.parametrize(
    "document",
    [
        # orjson's path: the document of the standard library's, without spaces.
        {"z": [1, 0.5, 1e-05, 2.5e16, None, True], "a": {"é": 'x\u2028\n\x01"\\', "b": []}},
        # orjson refuses these: the standard library writes them, compact all the same.
        {"big": 2**64, "a": [1, 2]},
        {"lone": "\ud800", "a": 1},
    ],
    ids=["orjson", "beyond-64-bits", "lone-surrogate"],
)
def test_compact_json_is_the_same_document_without_spaces(document: dict[str, Any]) -> None:
    import json

    text = formatter_for("json", kinds.COVERAGE).render(_Compact(document))
    assert text.endswith("}\n") and ", " not in text and '": ' not in text
    assert json.loads(text) == document
    assert list(json.loads(text)) == sorted(document)
