"""Every printed result, for people and for programs: one typed result model per kind, rendered
by the formatters of one registry (`registry`: table, JSON, HTML), and the bundle verification
report written as the canonical JSON Statement, its auditor DSSE and the HTML file (`writers`).

Entry points: `emit(result, format, KIND)` (the kinds: `kinds`), `write_reports(outcome,
output_dir, signer)`. Imported lazily: a command printing a table pays for Rich, not for the
bundle verifier `writers` needs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .render import render_html, report_renderable
    from .writers import ReportFiles, check_auditor_key, write_reports

_LAZY = {
    "render_html": "render",
    "report_renderable": "render",
    "ReportFiles": "writers",
    "check_auditor_key": "writers",
    "write_reports": "writers",
}

__all__ = ["ReportFiles", "check_auditor_key", "render_html", "report_renderable", "write_reports"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
