"""`function-map verify` and the API print one typed report (formats.coverage.CoverageReport)
through the report registry: JSON is the model's to_dict, table names the key figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from report_support import Inputs, parse, verify_map

from stella_bundle.coverage import verify_files
from stella_bundle.errors import MalformedDocumentError
from stella_bundle.formats.coverage import CoverageReport
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.report.kinds import COVERAGE
from stella_bundle.report.registry import render


def test_json_is_the_model_and_round_trips(run_cli: Any, inputs: Inputs, tmp_path: Path) -> None:
    written = tmp_path / "report.json"
    result = verify_map(run_cli, inputs, "--format", "json", "--output", written)
    assert result.exit_code == 1, result.stderr  # crypto below its minimum
    document = parse(result.stdout)
    report = CoverageReport.from_dict(document)
    assert report.to_dict() == document
    assert render(report, "json", COVERAGE) == result.stdout == written.read_text()
    assert (report.verified, len(report.missing_symbols), len(report.unexpected_symbols)) == (
        False,
        2,
        1,
    )


def test_report_is_the_engine_document_byte_for_byte(inputs: Inputs) -> None:
    """The API answers orjson of the typed report: the same keys in the same order as the
    engine's dict it replaced (the bytes clients got before)."""
    result = verify_files(load_function_map(inputs.function_map), [inputs.observations])
    engine = {**result.to_dict(), "function_map": result.function_map}
    assert orjson.dumps(result.report().to_dict()) == orjson.dumps(engine)


def test_table_names_the_key_figures(run_cli: Any, inputs: Inputs) -> None:
    result = verify_map(run_cli, inputs)
    assert result.exit_code == 1, result.stderr
    out = result.stdout
    for figure in (
        "NOT VERIFIED",
        "observation rate 81.82% (target 80.00%)",
        "records 23 in window / 23 read",
        "report/000",
        "missing",
        "Missing symbols",
        "fn_3",
        "Unexpected symbols",
        "stray_[bold]x",  # input text printed as itself, not as markup
        "failed: tag crypto",
    ):
        assert figure in out, figure


@pytest.mark.parametrize("mutation", ["drop", "extra", "type"])
def test_from_dict_refuses_a_broken_report(inputs: Inputs, mutation: str) -> None:
    result = verify_files(load_function_map(inputs.function_map), [inputs.observations])
    document = result.report().to_dict()
    if mutation == "drop":
        del document["scope"]
    elif mutation == "extra":
        document["per_tag"]["crypto"]["rate"] = 1
    else:
        document["per_path_breakdown"][0]["status"] = "seen"
    with pytest.raises(MalformedDocumentError):
        CoverageReport.from_dict(document, "report.json")


def test_typed_parts_agree_with_the_strict_reader(inputs: Inputs) -> None:
    """The engine's report is typed lazily (no object per path until read); what it reads
    must be what from_dict's field-by-field readers make of the same document."""
    report = verify_files(load_function_map(inputs.function_map), [inputs.observations]).report()
    parsed = CoverageReport.from_dict(report.to_dict())
    for part in ("per_path_breakdown", "per_tag", "window", "scope", "function_map"):
        assert getattr(report, part) == getattr(parsed, part), part
    assert parsed == report and parsed.to_dict() == report.to_dict()
    assert report.per_tag["crypto"].verified is False
