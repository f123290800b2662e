"""The coverage dashboard's pages, rendered on the server as self-contained HTML.

No script, no stylesheet, font or image from anywhere: inline CSS and inline SVG only, so the
page works on an air-gapped network and its Content-Security-Policy can forbid every other
source. Every value from a map or a record (path ids, symbols, purls) is escaped: they are
input, not markup.
"""

from __future__ import annotations

from html import escape
from typing import Any, Final
from urllib.parse import quote

# default-src 'none': nothing is fetched; inline styles only (no scripts at all).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_STYLE: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2430;background:#f7f8fa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#5a6472;font-size:12px;word-break:break-all}
.card{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:16px;margin:12px 0}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:600;color:#fff}
.ok{background:#2e7d32}.no{background:#c62828}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{color:#5a6472;font-weight:600}
.missing{color:#c62828;font-weight:600}.partial{color:#b26a00}.observed{color:#2e7d32}
code{font-size:12px;word-break:break-all}
a{color:#1a56b0}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def render_index(maps: list[dict[str, Any]]) -> str:
    rows = "".join(
        "<tr>"
        f'<td><a href="/ui/function-maps/{quote(m["digest"], safe=":")}">'
        f"{escape(m['service'])}</a></td>"
        f"<td><code>{escape(m['digest'])}</code></td>"
        f"<td>{'signature checked' if m['signature_checked'] else 'unsigned'}</td>"
        f"<td>{escape(m['stored_at'])}</td></tr>"
        for m in maps
    )
    table = (
        '<table id="maps"><tr><th>service</th><th>digest</th><th>signature</th>'
        f"<th>stored</th></tr>{rows}</table>"
        if maps
        else "<p>No function map stored yet: <code>POST /api/v1/function-maps</code>.</p>"
    )
    return _page(
        "stella coverage",
        f'<h1>Coverage dashboard</h1><div class="card">{table}</div>',
    )


def _trend_chart(trend: list[dict[str, Any]], target: float) -> str:
    """Observation rate per window (line and points) against the target (dashed line)."""
    width, height, left, right, top, bottom = 760, 220, 44, 12, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(rate: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, rate)))

    def x(index: int) -> float:
        return left + (plot_w * index / (len(trend) - 1) if len(trend) > 1 else plot_w / 2)

    parts = [
        f'<svg id="trend" role="img" aria-label="observation rate over time" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#dde2e8"/>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#5a6472">{int(tick * 100)}%</text>'
        )
    parts.append(
        f'<line id="target" x1="{left}" x2="{left + plot_w}" y1="{y(target):.1f}" '
        f'y2="{y(target):.1f}" stroke="#c62828" stroke-dasharray="6 4"><title>target '
        f"{_percent(target)}</title></line>"
    )
    if trend:
        points = " ".join(f"{x(i):.1f},{y(w['observation_rate']):.1f}" for i, w in enumerate(trend))
        parts.append(f'<polyline points="{points}" fill="none" stroke="#1a56b0" stroke-width="2"/>')
        for index, window in enumerate(trend):
            colour = "#2e7d32" if window["verified"] else "#c62828"
            parts.append(
                f'<circle cx="{x(index):.1f}" cy="{y(window["observation_rate"]):.1f}" r="4" '
                f'fill="{colour}"><title>{escape(window["from"])} → {escape(window["to"])}: '
                f"{_percent(window['observation_rate'])}, {window['records_in_window']} "
                "records</title></circle>"
            )
        parts.append(
            f'<text x="{left}" y="{height - 8}" font-size="10" fill="#5a6472">'
            f"{escape(trend[0]['from'])}</text>"
            f'<text x="{left + plot_w}" y="{height - 8}" font-size="10" text-anchor="end" '
            f'fill="#5a6472">{escape(trend[-1]["to"])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tag_bars(per_tag: dict[str, dict[str, Any]]) -> str:
    """One bar per tag: its observation rate (green when the tag's rule is met), with the
    tag's own target marked when the map sets one."""
    row_h, label_w, bar_w = 26, 90, 560
    height = row_h * max(len(per_tag), 1) + 8
    parts = [
        f'<svg id="tags" role="img" aria-label="observation rate per tag" '
        f'viewBox="0 0 {label_w + bar_w + 90} {height}" width="{label_w + bar_w + 90}" '
        f'height="{height}">'
    ]
    for index, (tag, values) in enumerate(sorted(per_tag.items())):
        top = 4 + index * row_h
        rate = float(values["observation_rate"])
        colour = "#2e7d32" if values.get("verified") else "#c62828"
        parts.append(
            f'<text x="0" y="{top + 15}" font-size="12">{escape(tag)}</text>'
            f'<rect x="{label_w}" y="{top}" width="{bar_w}" height="18" fill="#eef0f3"/>'
            f'<rect class="bar" x="{label_w}" y="{top}" width="{bar_w * rate:.1f}" height="18" '
            f'fill="{colour}"><title>{escape(tag)}: {values["observed_paths"]}/'
            f"{values['required_paths']} paths</title></rect>"
            f'<text x="{label_w + bar_w + 8}" y="{top + 14}" font-size="12">{_percent(rate)}'
            "</text>"
        )
        if "target_rate" in values:  # a tag's own minimum (tag_min_rates), when the map sets one
            mark = label_w + bar_w * float(values["target_rate"])
            parts.append(
                f'<line class="tag-target" x1="{mark:.1f}" x2="{mark:.1f}" y1="{top - 2}" '
                f'y2="{top + 20}" stroke="#1d2430" stroke-width="2"><title>target '
                f"{_percent(float(values['target_rate']))}</title></line>"
            )
    parts.append("</svg>")
    return "".join(parts)


def render_map(coverage: dict[str, Any], windows: int) -> str:
    summary = coverage["function_map"]
    verified = coverage["verified"]
    window = coverage["window"]
    missing = coverage["missing_paths"]
    unexpected = coverage["unexpected_symbols"]
    paths = "".join(
        f"<tr><td><code>{escape(p['path_id'])}</code></td><td>{escape(p['tag'])}</td>"
        f'<td class="{escape(p["status"])}">{escape(p["status"])}</td>'
        f"<td>{p['observed_nodes']}/{p['total_nodes']}</td>"
        f"<td>{'optional' if p['optional'] else ''}</td></tr>"
        for p in coverage["per_path"]
    )
    missing_list = (
        '<ul id="missing">'
        + "".join(f"<li><code>{escape(path)}</code></li>" for path in missing)
        + "</ul>"
        if missing
        else '<p id="missing">None: every required path was observed.</p>'
    )
    unexpected_rows = "".join(
        f"<tr><td><code>{escape(str(item.get('function_name', '')))}</code></td>"
        f"<td><code>{escape(str(item.get('purl') or ''))}</code></td>"
        f"<td>{escape(str(item.get('count', '')))}</td>"
        f"<td>{escape(', '.join(item.get('probe_types', [])))}</td>"
        f"<td>{escape(str(item.get('diagnosis', '')))}</td></tr>"
        for item in unexpected
    )
    unexpected_table = (
        '<table id="unexpected"><tr><th>function</th><th>purl</th><th>count</th>'
        f"<th>probe types</th><th>diagnosis</th></tr>{unexpected_rows}</table>"
        if unexpected
        else '<p id="unexpected">None.</p>'
    )
    body = (
        '<p><a href="/ui/">← all maps</a></p>'
        f"<h1>{escape(summary['service'])}</h1>"
        f'<div class="meta">{escape(summary["digest"])} · '
        f"{'signature checked' if summary['signature_checked'] else 'unsigned'} · "
        f"window {escape(str(window['from']))} → {escape(str(window['to']))}</div>"
        '<div class="card">'
        f'<span id="verdict" class="verdict {"ok" if verified else "no"}">'
        f"{'VERIFIED' if verified else 'NOT VERIFIED'}</span> "
        f'observation rate <b id="rate">{_percent(coverage["observation_rate"])}</b> '
        f"(target {_percent(coverage['target_rate'])})</div>"
        f"<h2>Observation rate over time ({windows} windows)</h2>"
        f'<div class="card">{_trend_chart(coverage["trend"], coverage["target_rate"])}</div>'
        f'<h2>Per tag</h2><div class="card">{_tag_bars(coverage["per_tag"])}</div>'
        f'<h2>Missing paths ({len(missing)})</h2><div class="card">{missing_list}</div>'
        f"<h2>Unexpected symbols ({len(unexpected)})</h2>"
        f'<div class="card">{unexpected_table}</div>'
        '<h2>Every path</h2><div class="card"><table id="paths"><tr><th>path</th>'
        f"<th>tag</th><th>status</th><th>nodes</th><th></th></tr>{paths}</table></div>"
    )
    return _page(f"{summary['service']}: coverage", body)


def render_login(message: str = "") -> str:
    note = f'<p class="missing">{escape(message)}</p>' if message else ""
    return _page(
        "stella coverage: sign in",
        '<h1>Coverage dashboard</h1><div class="card">'
        f'{note}<form method="post" action="/ui/login">'
        '<label>API token (read scope) <input type="password" name="token" size="60" '
        'autocomplete="off"></label> <button type="submit">Sign in</button></form></div>',
    )
