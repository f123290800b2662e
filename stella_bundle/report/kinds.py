"""The kinds of result the commands print, each with its model and its views.

The model is named from `formats/` (or the library module that produces it) and the views from
`report/`; strings, so that choosing a `--format` imports nothing heavy."""

from __future__ import annotations

from typing import Final

from .registry import ResultKind

COVERAGE: Final = ResultKind(
    "function-map verification report",
    "stella_bundle.formats.coverage:CoverageReport",
    "stella_bundle.report.tables:coverage_table",
)
BUNDLE_REPORT: Final = ResultKind(
    "bundle verification report",
    "stella_bundle.formats.report:VerificationReport",
    "stella_bundle.report.render:report_renderable",
    "stella_bundle.report.render:render_html",
)
