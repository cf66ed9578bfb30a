"""The compliance report as one self-contained HTML page, and the timeline as inline SVG.

No external assets and no script: styles are inline, the timeline is an SVG bar chart
whose bars carry their numbers as ``<title>`` tooltips, and the page's
Content-Security-Policy forbids scripts, so that a value that slipped past escaping
could still run nothing. Every value from an event is escaped (:func:`esc`): names,
datasets, reasons and all a person's server reported are written by people.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .report import CATEGORIES, SECTIONS

__all__ = ["CSP", "esc", "html_page", "render_html", "table", "timeline_svg"]

#: Scripts, frames, fonts and fetches forbidden; only the page's own inline styles.
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

#: A colour per timeline category (CATEGORIES' order).
PALETTE = dict(zip(CATEGORIES, ("#4e79a7", "#59a14f", "#e15759", "#f1ce63", "#7b2d8e", "#a0cbe8", "#f28e2b",
                                "#76b7b2", "#8cd17d", "#b07aa1", "#ff9da7", "#9c755f", "#d4a6c8", "#86bcb6",
                                "#e8c547", "#bab0ac"),
                   strict=True))  # fmt: skip

LABELS = {"request_id": "Request", "model_name": "Model", "version": "Version", "stage": "Stage",
          "requester": "Requested by", "requested_at": "Requested", "status": "Status", "decided_by": "Decided by",
          "decided_at": "Decided", "executed_at": "Executed", "rolled_back_at": "Rolled back",
          "sod_breach": "Separation of duties", "dataset": "Dataset", "time": "Time", "user": "User",
          "client_address": "Client address", "authenticator": "Authenticator", "action": "Action",
          "target_user": "Whose access", "role": "Role", "group": "Group", "outcome": "Outcome",
          "policy": "Policy", "resource": "Resource", "reasons": "Reasons", "events": "Events", "type": "Type",
          "count": "Count"}  # fmt: skip
TITLES = {"deployments": "Deployment requests", "data_access": "Data-access requests",
          "restricted_reads": "Reads of restricted data",
          "failed_logins": "Failed logins", "access_changes": "Role and group changes",
          "policy_denials": "Policy denials"}  # fmt: skip

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; }
tr.breach td { background: #fde2e1; } .breach strong { color: #b6202a; }
.meta, .none { color: #555; } code { overflow-wrap: anywhere; }
form label { display: inline-block; margin: 0 .8rem .4rem 0; } form input, form select { font: inherit; }
svg text { font: 11px system-ui, sans-serif; fill: #333; } svg.timeline { max-width: 100%; height: auto; }
"""


def esc(value: Any) -> str:
    """``value`` as HTML text, safe in an element and in a quoted attribute."""
    if isinstance(value, list):
        value = "; ".join(str(v) for v in value)
    return html.escape(str(value), quote=True)


def html_page(title: str, body: str) -> str:
    """A complete page: ``title`` (escaped here) and ``body`` (HTML already escaped)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )  # fmt: skip


def _cell(name: str, value: Any) -> str:
    if name == "sod_breach":
        return "<td><strong>BREACH: decided by the requester</strong></td>" if value else "<td>kept</td>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="n">{value}</td>'
    return f"<td>{esc(value)}</td>"


def table(columns: Sequence[str], rows: Iterable[Mapping[str, Any]], empty: str = "None in this period.") -> str:
    """A table of ``rows`` with ``columns`` (labelled from LABELS); ``empty`` when there are none."""
    lines = []
    for row in rows:
        css = ' class="breach"' if row.get("sod_breach") else ""
        lines.append(f"<tr{css}>" + "".join(_cell(c, row.get(c, "")) for c in columns) + "</tr>")
    if not lines:
        return f'<p class="none">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(LABELS.get(c, c))}</th>" for c in columns)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>"


# --- the timeline -----------------------------------------------------------------------------

WIDTH, PLOT_HEIGHT, LEFT, TOP, LEGEND_COLUMN = 960, 180, 48, 12, 135


def _when(start: str, unit: str) -> str:
    """A bucket's start as a label: the hour for hourly buckets, else the day."""
    return start[:16].replace("T", " ") if unit == "hour" else start[:10]


def _bars(buckets: Sequence[Mapping[str, Any]], unit: str, top: int) -> Iterable[str]:
    slot = (WIDTH - LEFT - 12) / max(1, len(buckets))
    for i, bucket in enumerate(buckets):
        base = TOP + PLOT_HEIGHT
        for name in CATEGORIES:
            count = bucket["counts"].get(name, 0)
            if not count:
                continue
            height = PLOT_HEIGHT * count / top
            base -= height
            tip = f"{_when(bucket['start'], unit)} ({unit}): {name} {count}"
            yield (f'<rect x="{LEFT + i * slot + slot * 0.1:.2f}" y="{base:.2f}" width="{max(slot * 0.8, 0.5):.2f}" '
                   f'height="{height:.2f}" fill="{PALETTE[name]}"><title>{esc(tip)}</title></rect>')  # fmt: skip


def _axes(buckets: Sequence[Mapping[str, Any]], unit: str, top: int) -> Iterable[str]:
    bottom = TOP + PLOT_HEIGHT
    yield f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - 12}" y2="{bottom}" stroke="#888"/>'
    yield f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#888"/>'
    yield f'<text x="{LEFT - 6}" y="{TOP + 8}" text-anchor="end">{top}</text>'
    yield f'<text x="{LEFT - 6}" y="{bottom}" text-anchor="end">0</text>'
    if buckets:
        first, last = _when(buckets[0]["start"], unit), _when(buckets[-1]["start"], unit)
        yield f'<text x="{LEFT}" y="{bottom + 16}">{esc(first)}</text>'
        yield f'<text x="{WIDTH - 12}" y="{bottom + 16}" text-anchor="end">{esc(last)}</text>'
        yield f'<text x="{(LEFT + WIDTH) / 2:.0f}" y="{bottom + 16}" text-anchor="middle">events per {esc(unit)}</text>'


def _legend(names: Sequence[str], top: int) -> Iterable[str]:
    per_row = (WIDTH - LEFT) // LEGEND_COLUMN
    for i, name in enumerate(names):
        x, y = LEFT + (i % per_row) * LEGEND_COLUMN, top + (i // per_row) * 18
        yield f'<rect x="{x}" y="{y}" width="10" height="10" fill="{PALETTE[name]}"/>'
        yield f'<text x="{x + 14}" y="{y + 9}">{esc(name)}</text>'


def timeline_svg(timeline: Mapping[str, Any]) -> str:
    """The timeline (``Timeline.to_json()``'s form) as a stacked bar chart, one bar per bucket."""
    buckets, unit = timeline["buckets"], str(timeline["bucket"])
    names = [n for n in CATEGORIES if n in timeline["categories"]]
    top = max([b["total"] for b in buckets] + [1])
    legend_top = TOP + PLOT_HEIGHT + 30
    height = legend_top + 18 * -(-len(names) // ((WIDTH - LEFT) // LEGEND_COLUMN)) + 6
    title = f"Events per {unit} by category"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" class="timeline"><title>{esc(title)}</title>',
        *_axes(buckets, unit, top),
        *_bars(buckets, unit, top),
        *_legend(names, legend_top),
    ]
    if not names:
        parts.append(
            f'<text x="{(LEFT + WIDTH) / 2:.0f}" y="{TOP + PLOT_HEIGHT / 2}" text-anchor="middle">no events</text>'
        )
    return "\n".join([*parts, "</svg>"])


# --- the report ---------------------------------------------------------------------------------


def _summary(report: Mapping[str, Any]) -> str:
    summary = report["summary"]
    rows = [(TITLES[name], summary[name]) for name in SECTIONS]
    rows.insert(1, ("Separation-of-duties breaches (decided by the requester)", summary["sod_breaches"]))
    rows.append(("People with events", summary["users"]))
    lines = []
    for label, count in rows:
        css = ' class="breach"' if "breaches" in label and count else ""
        lines.append(f'<tr{css}><th>{esc(label)}</th><td class="n">{count}</td></tr>')
    return "<table>\n" + "\n".join(lines) + "\n</table>"


def render_html(report: Mapping[str, Any]) -> str:
    """The compliance report as one self-contained HTML page."""
    positions = report["positions"]
    chain = f" · chain positions {positions['first']} to {positions['last']}" if positions else ""
    parts = [
        "<h1>hubforge compliance report</h1>",
        f'<p class="meta">From <time>{esc(report["from"])}</time> to <time>{esc(report["to"])}</time> '
        f"(UTC, the end excluded) · {report['events']} events{chain} · generated {esc(report['generated'])}. "
        "Check the trail itself with <code>hubforge audit verify</code>.</p>",
        "<h2>Summary</h2>",
        _summary(report),
        "<h2>Timeline</h2>",
        timeline_svg(report["timeline"]),
    ]
    for name, columns in SECTIONS.items():
        parts += [f"<h2>{esc(TITLES[name])}</h2>", table(columns, report[name])]
    counts = report["counts"]
    parts += ["<h2>Events per person</h2>", table(("user", "events"), counts["per_user"])]
    parts += [
        "<h2>Events per person and action</h2>",
        table(("user", "type", "action", "count"), counts["per_user_action"]),
    ]
    return html_page(f"Compliance report {report['from']} to {report['to']}", "\n".join(parts))
