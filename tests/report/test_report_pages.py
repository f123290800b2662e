"""Every kind renders as one self-contained HTML page: a kind without a page of its own gets
its table exported by Rich. Here the function-map report, opened by headless Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chromium_support import page_problems, run_chromium
from report_support import Inputs, assert_self_contained, page_text, parse, verify_map

from stella_bundle.formats.coverage import CoverageReport
from stella_bundle.report.kinds import COVERAGE
from stella_bundle.report.registry import render

HOSTILE = "<script>alert(1)</script>"


def _verify(run_cli: Any, inputs: Inputs, output_format: str) -> Any:
    result = verify_map(run_cli, inputs, "--format", output_format)
    assert result.exit_code == 1, result.stderr  # crypto below its minimum
    return result


def test_the_page_is_the_table(run_cli: Any, inputs: Inputs) -> None:
    page = _verify(run_cli, inputs, "html").stdout
    assert_self_contained(page)
    text = page_text(page)
    report = CoverageReport.from_dict(parse(_verify(run_cli, inputs, "json").stdout))
    assert text.startswith("Function-map verification report")
    # The page shows what the plain table shows, line for line.
    for line in render(report, "table", COVERAGE).splitlines():
        assert line.strip() in text, line


def test_what_the_input_says_is_escaped(run_cli: Any, inputs: Inputs) -> None:
    document = parse(_verify(run_cli, inputs, "json").stdout)
    first, *rest = document["missing_symbols"]
    document["missing_symbols"] = [{**first, "symbol": HOSTILE}, *rest]
    page = render(CoverageReport.from_dict(document), "html", COVERAGE)
    assert HOSTILE not in page and "&lt;script&gt;" in page
    assert HOSTILE in page_text(page)
    assert_self_contained(page)


def test_chromium_renders_the_page(run_cli: Any, inputs: Inputs, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(_verify(run_cli, inputs, "html").stdout)
    png = tmp_path / "report.png"
    shot = run_chromium(tmp_path / "profile", f"--screenshot={png}", page.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    dom = run_chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "NOT VERIFIED" in dom.stdout and "report/000" in dom.stdout
    assert page_problems(shot.stderr, dom.stderr) == []
