"""The table views: each result kind as rich tables for a terminal (registry's `table` format).

Each reads its typed model, so a misspelt field is a type error, not a silent default. Cells
that come from the input (symbols, paths, messages) are Text, never markup: a `[` in a symbol
must print as itself.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..formats.coverage import CoverageReport

_PATH_STYLE = {"observed": "green", "partial": "yellow", "missing": "red"}


def _cell(value: object) -> Text:
    """A cell from the input, printed as itself (a plain str cell would be read as markup)."""
    return Text("" if value is None else str(value))


def _percent(value: float) -> str:
    return f"{value:.2%}"


# --- function-map verify ---------------------------------------------------------------------


def coverage_table(report: CoverageReport) -> RenderableType:
    verdict = Text("VERIFIED", style="green") if report.verified else Text("NOT VERIFIED", "red")
    records = report.records
    parts: list[RenderableType] = [
        Text.assemble(
            verdict,
            f"  observation rate {_percent(report.observation_rate)} "
            f"(target {_percent(report.target_rate)}), confidence {report.confidence:.2f}, "
            f"records {records.get('in_window', 0)} in window / {records.get('read', 0)} read",
        )
    ]
    scope = report.scope
    if scope.declared:
        parts.append(
            Text(
                "scope: "
                + ", ".join(f"{k} {v}" for k, v in scope.declared.items())
                + f"; {scope.records_in_scope} record(s) in scope, "
                f"{scope.records_out_of_scope} out of scope (not counted)"
            )
        )
    parts += [Text.assemble(("out of scope:", "yellow"), f" {f}") for f in scope.findings]
    parts += [_coverage_paths(report), _coverage_tags(report)]
    if report.missing_symbols:
        missing = Table(title="Missing symbols")
        for column in ("purl", "symbol", "reason"):
            missing.add_column(column)
        for item in report.missing_symbols:
            missing.add_row(_cell(item["purl"]), _cell(item["symbol"]), _cell(item["reason"]))
        parts.append(missing)
    if report.unexpected_symbols:
        parts.append(_coverage_unexpected(report))
    parts += [Text(f"{d['diagnosis']}: {d.get('detail', '')}") for d in report.diagnoses]
    parts += [Text.assemble(("failed:", "red"), f" {failure}") for failure in report.failures]
    return Group(*parts)


def _coverage_paths(report: CoverageReport) -> Table:
    paths = Table(title="Expected paths", show_lines=False)
    for column in ("path", "tag", "status", "nodes", "confidence", "optional"):
        paths.add_column(column)
    for path in report.per_path_breakdown:
        paths.add_row(
            _cell(path.path_id),
            _cell(path.tag),
            Text(path.status, style=_PATH_STYLE.get(path.status, "")),
            f"{path.observed_nodes}/{path.total_nodes}",
            f"{path.confidence or 0.0:.2f}",
            "yes" if path.optional else "",
        )
    return paths


def _coverage_tags(report: CoverageReport) -> Table:
    tags = Table(title="Per tag")
    for column in ("tag", "observed/required", "rate", "min rate", "met"):
        tags.add_column(column)
    for name, tag in report.per_tag.items():
        tags.add_row(
            _cell(name),
            f"{tag.observed_paths}/{tag.required_paths}",
            _percent(tag.observation_rate or 0.0),
            _percent(tag.target_rate) if tag.target_rate is not None else "",
            "yes" if tag.verified else Text("no", style="red"),
        )
    return tags


def _coverage_unexpected(report: CoverageReport) -> Table:
    unexpected = Table(title="Unexpected symbols")
    for column in ("function", "purl", "count", "probe types", "diagnosis"):
        unexpected.add_column(column)
    for item in report.unexpected_symbols:
        unexpected.add_row(
            _cell(item["function_name"]),
            _cell(item["purl"]),
            str(item["count"]),
            _cell(", ".join(item["probe_types"])),
            _cell(item.get("diagnosis")),
        )
    return unexpected
