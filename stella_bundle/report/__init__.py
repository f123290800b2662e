"""The verification report for people and for the record: rendered from the typed report
(`formats.report.VerificationReport`) as rich tables or one self-contained HTML page (`render`),
and written as the canonical JSON Statement, its auditor DSSE and the HTML file (`writers`).

Entry point: `write_reports(outcome, output_dir, signer)`; `report_renderable` (table) and
`render_html` (HTML) for printing."""

from .render import render_html, report_renderable
from .writers import ReportFiles, check_auditor_key, write_reports

__all__ = ["ReportFiles", "check_auditor_key", "render_html", "report_renderable", "write_reports"]
