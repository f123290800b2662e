"""The verification report rendered for people: rich tables on a terminal, one HTML file.

Both read the typed report (formats.report.VerificationReport), so a misspelt field is a type
error rather than a silent default. The HTML is self-contained (inline CSS and SVG, no script, no external asset, a CSP that
forbids fetching anything) because it is opened on air-gapped machines.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..formats.report import PathResult, TagResult, VerificationReport

_STATUS_STYLE = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}
_PATH_STYLE = {"observed": "green", "partial": "yellow", "missing": "red"}


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{float(value) * 100:.1f} %"


def _symbol_text(item: str | Mapping[str, Any]) -> str:
    """A symbol as the report names it: a name, or an object (a node, an observation)."""
    if isinstance(item, str):
        return item
    name = item.get("symbol") or item.get("function_name") or item.get("node_hash") or ""
    extra = item.get("purl") or item.get("path_id") or ""
    return f"{name} ({extra})" if extra else str(name)


def tag_values(values: TagResult, default_target: float) -> tuple[float, float, bool]:
    """(rate, target, met) of one tag; a tag without its own target has the report's."""
    rate = values.observation_rate or 0.0
    target = values.target_rate if values.target_rate is not None else default_target
    met = values.verified if values.verified is not None else rate >= target
    return rate, target, met


def _signers(report: VerificationReport) -> list[tuple[str, str, str, str]]:
    return [
        (attestation.role or "", attestation.uri or "", signer.keyid, signer.fingerprint)
        for attestation in report.input_attestations
        for signer in attestation.signers or ()
    ]


# --- terminal ----------------------------------------------------------------------------------


def report_renderable(report: VerificationReport) -> RenderableType:
    verdict = report.verification_result
    style = "bold green" if verdict == "PASSED" else "bold red"
    header = Text.assemble(
        ("verdict: ", "bold"),
        (verdict, style),
        f"   service {report.service or '?'}   observation rate "
        f"{_rate(report.observation_rate)} (target {_rate(report.target_rate)})"
        f"   confidence {_rate(report.confidence)}",
    )
    parts: list[RenderableType] = [header, _steps_table(report)]
    if report.per_path_breakdown:
        parts += [_tags_table(report), _paths_table(report)]
    if report.evidence:
        parts.append(_chains_table(report))
    missing = [_symbol_text(s) for s in report.missing_symbols]
    unexpected = [_symbol_text(s) for s in report.unexpected_symbols]
    if missing:
        parts.append(Text("missing symbols: " + ", ".join(missing[:20]), style="red"))
    if unexpected:
        parts.append(Text("unexpected symbols: " + ", ".join(unexpected[:20]), style="yellow"))
    return Group(*parts)


def _steps_table(report: VerificationReport) -> Table:
    steps = Table(title="verification steps", title_justify="left")
    steps.add_column("#", justify="right")
    steps.add_column("step")
    steps.add_column("status")
    steps.add_column("detail", overflow="fold")
    for number, step in enumerate(report.steps or (), start=1):
        steps.add_row(
            str(number),
            step.name,
            Text(step.status, style=_STATUS_STYLE.get(step.status, "")),
            step.message or "",
        )
    return steps


def _paths_table(report: VerificationReport) -> Table:
    paths = Table(title="paths", title_justify="left")
    for column in ("path", "tag", "status", "confidence"):
        paths.add_column(column)
    for path in report.per_path_breakdown:
        paths.add_row(
            path.path_id,
            path.tag or "",
            Text(path.status + _optional_note(path), style=_PATH_STYLE.get(path.status, "")),
            _rate(path.confidence) if path.confidence is not None else "",
        )
    return paths


def _tags_table(report: VerificationReport) -> Table:
    tags = Table(title="per tag", title_justify="left")
    for column in ("tag", "rate", "target", "verified"):
        tags.add_column(column)
    for tag, values in sorted(report.per_tag.items()):
        rate, target, met = tag_values(values, report.target_rate)
        tags.add_row(tag, _rate(rate), _rate(target), "yes" if met else "no")
    return tags


def _chains_table(report: VerificationReport) -> Table:
    chains = Table(title="evidence chains", title_justify="left")
    for column in ("chain", "chunks", "gaps", "final seal", "events lost"):
        chains.add_column(column)
    for chain in report.evidence:
        chains.add_row(
            chain.chain_id,
            str(chain.chunks),
            str(len(chain.gaps)),
            "yes" if chain.final_seal_present else "no",
            str(chain.events_lost),
        )
    return chains


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:72em;
color:#1b1f24;padding:0 1em}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #ccd}
.verdict{display:inline-block;padding:.35em .9em;border-radius:.3em;font-weight:700;font-size:1.4em;
color:#fff}.PASSED{background:#1a7f37}.FAILED{background:#cf222e}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #d0d7de;padding:.3em .55em;
text-align:left;vertical-align:top}th{background:#f6f8fa}
.observed,.passed{color:#1a7f37;font-weight:600}.partial,.skipped{color:#9a6700;font-weight:600}
.missing,.failed,.error{color:#cf222e;font-weight:600}code{font-size:.92em;word-break:break-all}
.meta td:first-child{width:14em;color:#57606a}.muted{color:#57606a}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _optional_note(path: PathResult) -> str:
    # An optional path does not count against the rate: say so beside its status.
    return " (optional)" if path.optional else ""


def _table(headers: Iterable[str] | None, rows: Iterable[Iterable[str]]) -> str:
    head = ""
    if headers is not None:
        head = "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def tag_chart_svg(per_tag: Mapping[str, TagResult], default_target: float) -> str:
    """Horizontal bars of each tag's observation rate with its target as a tick."""
    tags = sorted(per_tag)
    if not tags:
        return '<p class="muted">no tags</p>'
    row, left, width = 30, 110, 420
    height = row * len(tags) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="observation rate per tag" '
        f'width="{left + width + 150}" height="{height}" font-size="12" font-family="sans-serif">'
    ]
    for index, tag in enumerate(tags):
        rate, target, met = tag_values(per_tag[tag], default_target)
        y = 10 + index * row
        color = "#1a7f37" if met else "#cf222e"
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{_e(tag)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{width}" height="20" fill="#eaeef2"/>')
        parts.append(
            f'<rect x="{left}" y="{y}" width="{rate * width:.1f}" height="20" fill="{color}"/>'
        )
        tick = left + target * width
        parts.append(
            f'<line x1="{tick:.1f}" y1="{y - 3}" x2="{tick:.1f}" y2="{y + 23}" stroke="#1b1f24" '
            'stroke-width="2"/>'
        )
        parts.append(
            f'<text x="{left + width + 8}" y="{y + 15}">{rate * 100:.1f} % / {target * 100:.0f} %</text>'
        )
    parts.append(
        f'<text x="{left}" y="{height - 4}" fill="#57606a">bar: observed · tick: target</text></svg>'
    )
    return "".join(parts)


def render_html(report: VerificationReport) -> str:
    verdict = report.verification_result
    steps = _table(
        ("#", "step", "status", "detail"),
        (
            (
                str(n),
                _e(s.name),
                f'<span class="{_e(s.status)}">{_e(s.status)}</span>',
                _e(s.message or ""),
            )
            for n, s in enumerate(report.steps or (), start=1)
        ),
    )
    paths = _table(
        ("path", "tag", "status", "confidence", "nodes"),
        (
            (
                f"<code>{_e(p.path_id)}</code>",
                _e(p.tag or ""),
                f'<span class="{_e(p.status)}">{_e(p.status)}</span>' + _e(_optional_note(p)),
                _e(_rate(p.confidence)) if p.confidence is not None else "",
                _e(", ".join(_symbol_text(node) for node in p.nodes or ())),
            )
            for p in report.per_path_breakdown
        ),
    )
    chains = _table(
        ("chain", "chunks", "gaps", "final seal", "events lost"),
        (
            (
                f"<code>{_e(c.chain_id)}</code>",
                _e(c.chunks),
                _e(len(c.gaps)),
                "yes" if c.final_seal_present else '<span class="failed">no</span>',
                _e(c.events_lost),
            )
            for c in report.evidence
        ),
    )
    signers = _table(
        ("role", "document", "keyid", "fingerprint (SHA-256 of the public key)"),
        (
            (
                _e(role),
                f"<code>{_e(uri)}</code>",
                f"<code>{_e(keyid)}</code>",
                f"<code>{_e(fp)}</code>",
            )
            for role, uri, keyid, fp in _signers(report)
        ),
    )

    def symbol_list(items: Iterable[str | Mapping[str, Any]]) -> str:
        texts = [_symbol_text(i) for i in items]
        if not texts:
            return '<p class="muted">none</p>'
        return "<ul>" + "".join(f"<li><code>{_e(t)}</code></li>" for t in texts) + "</ul>"

    window_from = report.window.start if report.window else None
    window_to = report.window.end if report.window else None
    resource = (report.resource_digest or {}).get("sha256", "")
    meta = _table(
        None,
        (
            ("resource", f"<code>{_e(report.resource_uri)}</code>"),
            ("resource sha256", f"<code>{_e(resource)}</code>"),
            ("service", _e(report.service or "")),
            (
                "function map sha256 (policy)",
                f"<code>{_e(report.policy.digest.get('sha256', ''))}</code>",
            ),
            ("window", _e(f"{window_from or '—'} → {window_to or '—'}")),
            ("verified at", _e(report.time_verified)),
            ("verifier", _e(f"{report.verifier.id} {report.verifier.version}")),
        ),
    ).replace("<table>", '<table class="meta">')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stella verification report: {_e(verdict)}</title><style>{_CSS}</style></head>
<body>
<h1>Function-map verification report</h1>
<p><span id="verdict" class="verdict {verdict}">{verdict}</span></p>
<p id="rate">observation rate <strong>{_e(_rate(report.observation_rate))}</strong>
against a target of <strong>{_e(_rate(report.target_rate))}</strong>;
probe-weighted confidence {_e(_rate(report.confidence))}</p>
{meta}
<h2>Verification steps</h2>{steps}
<h2>Observation rate per tag</h2>{tag_chart_svg(report.per_tag, report.target_rate)}
<h2>Paths</h2>{paths}
<h2>Missing symbols</h2>{symbol_list(report.missing_symbols)}
<h2>Unexpected symbols</h2>{symbol_list(report.unexpected_symbols)}
<h2>Evidence chains</h2>{chains}
<h2>Signers</h2>{signers}
</body></html>
"""
