"""The report's HTML page: header, key figures, the charts, the coverage and data-quality tables.

Why a module of its own: the page is what makes the report one self-contained file that opens
offline and can be mailed: plotly.js is inlined once (no CDN, ~5 MB) and every chart is written
without its own copy. Keeping the page apart from the numbers (``data``) and the figures
(``figures``) puts the markup, the style sheet and the text around the charts in one place.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harvester import __version__
from harvester.report.data import ReportData, Rows
from harvester.report.figures import charts
from harvester.store.location import store_name

COVERAGE_COLUMNS = (
    *("phone", "first_day", "last_day", "days", "days_held", "days_failed", "days_missing"),
    *("days_retry_failed", "last_fetched_at"),
)
QUALITY_COLUMNS = (
    *("rule", "phone", "window_start", "application", "form", "item"),
    *("expected", "actual", "difference"),
)


def _percent(part: Any, whole: Any) -> str:
    return f"{part / whole:.1%}" if part is not None and whole else "n/a"


def _table(rows: Rows, columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.3g}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(
    data: ReportData,
    root: Path,
    date_from: dt.date | None,
    date_to: dt.date | None,
    go: Any,
) -> str:
    """The whole HTML document: header, key figures, charts, coverage and data-quality tables."""
    from plotly.offline import get_plotlyjs

    t = data.totals
    calls = t["calls"]
    asked = f"{date_from or 'start'} to {date_to or 'end'}"
    held = f"{t['first_day']} to {t['last_day']}" if t["first_day"] else "no data"
    source = (
        "the merged number ALL (every number of the account, as VoiceTrends adds them up)"
        if data.scope == "all"
        else f"the {t['phones']} harvested number(s) added up (the store holds no ALL rows here)"
    )
    kpis = [
        ("calls", f"{calls:,}" if calls is not None else "0"),
        ("transferred", _percent(t["transferred"], calls)),
        ("not transferred at a transfer point", _percent(t["transfer_failed"], calls)),
        ("self-service", _percent(t["self_service"], calls)),
        ("hung up in a menu", _percent(t["abandoned"], calls)),
        ("recognition errors per call", f"{t['errors'] / calls:.2f}" if calls else "n/a"),
    ]
    parts = [
        f"<h1>VoiceTrends Diagnostic Flow report</h1>"
        f"<p class=meta>Store {html.escape(store_name(root))} · range asked {asked} · "
        f"data {held} · figures from {html.escape(source)} · generated "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by harvester {__version__}</p>",
        "<div class=kpis>"
        + "".join(
            f"<div class=kpi><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>"
            for k, v in kpis
        )
        + "</div>",
    ]
    if data.partial:
        parts.append(
            f"<p class=warn>{len(data.partial)} window(s) straddle the range and are left out "
            "(a window's counts cannot be split by day).</p>"
        )
    if not data.trend:
        parts.append("<p class=warn>No call data in this range.</p>")
    config = {"displaylogo": False, "responsive": True}
    for heading, fig in charts(data, go):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, config=config))
    if data.coverage:
        shown = len(data.coverage)
        more = f" (the {shown} least covered of {data.phones})" if shown < data.phones else ""
        parts.append(f"<h2>Coverage per phone{more}</h2>")
        parts.append(
            _table(
                data.coverage,
                COVERAGE_COLUMNS,
            )
        )
    parts.append("<h2>Data quality</h2>")
    if data.quality_rules:
        parts.append(
            "<p class=warn>Some rows break the identities of the API notes (see the "
            "data_quality view); the figures above still include them.</p>"
        )
        parts.append(
            _table(data.quality_rules, ["level", "rule", "identity", "cases", "total_difference"])
        )
        parts.append(
            _table(
                data.quality_rows,
                QUALITY_COLUMNS,
            )
        )
    else:
        parts.append("<p>Every identity of the API notes holds on this data.</p>")
    return _PAGE.format(
        title=html.escape(f"VoiceTrends report {held}"),
        style=_STYLE,
        plotly=get_plotlyjs(),
        body="\n".join(parts),
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; }
.meta { color: #666; font-size: 0.9em; } .warn { color: #8a4b00; }
.kpis { display: flex; flex-wrap: wrap; gap: 1em; margin: 1.5em 0; }
.kpi { border: 1px solid #ddd; border-radius: 6px; padding: 0.7em 1em; min-width: 10em; }
.kpi b { display: block; font-size: 1.5em; } .kpi span { color: #555; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #eee; padding: 0.3em 0.8em; text-align: left; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{style}</style>
<script>{plotly}</script>
</head>
<body>
{body}
</body>
</html>
"""
