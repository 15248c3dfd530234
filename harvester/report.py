"""``harvester report``: one self-contained HTML file of charts over the bundled views.

Why it exists: the views answer "where do callers struggle, hang up or get transferred, and how
does that change" one table at a time; an analyst wants it at a glance, in a file that opens
offline and can be mailed. Every number comes from a bundled view (``queries/*.sql``), so the
report and ``harvester query`` never disagree. plotly.js is inlined once (no CDN), which makes
the file ~5 MB; plotly is the optional ``report`` extra.

Which figures: the merged number ``ALL`` when the store holds it for the range (it is the whole
account, numbers not harvested included), else the harvested numbers added up; the header says
which. The per-number chart shows the busiest numbers, the coverage chart and table the least
covered phones (ALL included), so an account with hundreds of numbers still gets a readable page.
A --from/--to range restricts every figure the way ``harvester query`` does (windows wholly
inside it); the coverage section then counts the days of that range.
"""

from __future__ import annotations

import datetime as dt
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from harvester import __version__
from harvester.errors import UsageError
from harvester.store import retry_read
from harvester.views import check_store, connect, partial_windows, warn_partial_windows

# Items per hotspot chart: enough to show the long tail starts, few enough to read the labels.
TOP_ITEMS = 12
# Phones drawn as lines (the busiest); the coverage chart and table show 4x as many (the least
# covered): a big account has hundreds of numbers, and a chart of them all shows nothing.
MAX_PHONES_CHARTED = 10
# Rows of the data-quality table shown in full; the rest are counted per rule above it.
QUALITY_ROWS = 20
CHART_HEIGHT = 380
# One colour per call ending, the same in every chart (colour-blind-safe Okabe-Ito hues).
ENDINGS = (
    ("transferred", "transferred to an agent", "#0072B2"),
    ("transfer_failed", "ended at a transfer point, not transferred", "#E69F00"),
    ("self_service", "finished in self-service", "#009E73"),
    ("abandoned", "hung up in a menu", "#D55E00"),
)
# Per-item outcome segments (shares of visits), in the order they stack.
SEGMENTS = (
    ("filled", "filled", "#009E73"),
    ("transfer", "transferred", "#0072B2"),
    ("nomatch", "no match", "#CC79A7"),
    ("noinput", "no input", "#F0E442"),
    ("hangups", "hung up / not transferred", "#D55E00"),
)
COVERAGE_COLUMNS = (
    *("phone", "first_day", "last_day", "days", "days_held", "days_failed", "days_missing"),
    *("days_retry_failed", "last_fetched_at"),
)
QUALITY_COLUMNS = (
    *("rule", "phone", "window_start", "application", "form", "item"),
    *("expected", "actual", "difference"),
)
COVERAGE_STATES = (("held", "#009E73"), ("failed", "#D55E00"), ("missing", "#BBBBBB"))

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, read from the views in one connection."""

    scope: str  # 'all' or 'number'
    totals: dict[str, Any]
    trend: Rows
    trend_by_app: Rows
    by_phone: Rows
    numbers: int  # phone numbers (not ALL) with calls; by_phone holds the busiest of them
    hangup_hotspots: Rows
    error_hotspots: Rows
    items: Rows
    coverage: Rows
    coverage_days: Rows
    phones: int  # phones in the ledger; coverage holds the least covered of them
    quality_rules: Rows
    quality_rows: Rows
    partial: list[tuple[dt.date, dt.date]]


def write_report(
    root: Path,
    out: Path,
    *,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> None:
    """Write the report for the store at ``root`` (restricted to ``date_from``..``date_to``)."""
    go = _plotly()
    check_store(root)
    if out.exists() and out.is_dir():
        raise UsageError(f"report: {out} is a folder")
    con = connect(root, date_from=date_from, date_to=date_to)
    try:
        warn_partial_windows(con)
        data = collect(con)
    finally:
        con.close()
    page = render_page(data, root, date_from, date_to, go)
    temp = out.with_name(f".{out.name}.tmp")
    temp.write_text(page, encoding="utf-8")
    os.replace(temp, out)


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise UsageError(
            "report: plotly is not installed; install it with: pip install 'harvester[report]'"
        ) from None
    return go


# -- data ---------------------------------------------------------------------------------------


def _rows(con: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> Rows:
    def run() -> Rows:
        result = con.execute(sql, list(params))
        names = [d[0] for d in result.description or []]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    rows: Rows = retry_read(run)
    return rows


def collect(con: duckdb.DuckDBPyConnection) -> ReportData:
    """Read what the report shows from the bundled views."""
    has_all = _rows(con, "SELECT count(*) AS n FROM calls_by_scope WHERE scope = 'all'")[0]["n"]
    scope = "all" if has_all else "number"
    endings = ", ".join(f"CAST(sum({name}) AS BIGINT) AS {name}" for name, _, _ in ENDINGS)
    totals = _rows(
        con,
        f"""SELECT min(window_start) AS first_day, max(window_end) AS last_day,
                   count(DISTINCT phone) AS phones, count(DISTINCT application) AS applications,
                   CAST(sum(calls) AS BIGINT) AS calls, {endings},
                   CAST(sum(errors) AS BIGINT) AS errors
            FROM calls_by_scope WHERE scope = ?""",
        scope,
    )[0]
    outcome = "CAST(sum({0}) AS BIGINT) AS {0}"
    items_sql = f"""
        SELECT application, page, form, item, any_value(kind) AS kind,
               CAST(sum(visits) AS BIGINT) AS visits,
               CAST(sum(CASE WHEN kind = 'transfer' THEN 0 ELSE filled END) AS BIGINT) AS filled,
               {", ".join(outcome.format(c) for c in ("transfer", "nomatch", "noinput", "hangups"))}
        FROM item_outcomes_by_scope WHERE scope = ?
        GROUP BY application, page, form, item
        ORDER BY application, visits DESC, page, form, item"""
    # The least covered phones first: those are the ones to re-fetch.
    coverage = _rows(
        con,
        "SELECT * FROM coverage ORDER BY held_share NULLS FIRST, phone LIMIT ?",
        MAX_PHONES_CHARTED * 4,
    )
    phones = _rows(con, "SELECT count(*) AS n FROM coverage")[0]["n"]
    # data_quality is the costliest view (several passes over every row): run it once.
    retry_read(lambda: con.execute("CREATE TEMP TABLE report_quality AS FROM data_quality"))
    return ReportData(
        scope=scope,
        totals=totals,
        trend=_rows(
            con,
            f"""SELECT day, CAST(sum(calls) AS BIGINT) AS calls, {endings},
                       sum(transferred) / nullif(sum(calls), 0) AS transfer_rate,
                       sum(errors) / nullif(sum(calls), 0) AS errors_per_call
                FROM daily_trend_by_scope WHERE scope = ? GROUP BY day ORDER BY day""",
            scope,
        ),
        trend_by_app=_rows(
            con,
            "SELECT day, application, calls, transfer_rate FROM daily_trend_by_scope "
            "WHERE scope = ? ORDER BY application, day",
            scope,
        ),
        by_phone=_rows(
            con,
            """WITH per_day AS (
                   SELECT phone, day, CAST(sum(calls) AS BIGINT) AS calls
                   FROM calls GROUP BY phone, day
               ), busiest AS (
                   SELECT phone FROM per_day GROUP BY phone
                   ORDER BY sum(calls) DESC, phone LIMIT ?
               )
               SELECT * FROM per_day WHERE phone IN (SELECT phone FROM busiest)
               ORDER BY phone, day""",
            MAX_PHONES_CHARTED,
        ),
        numbers=_rows(con, "SELECT count(DISTINCT phone) AS n FROM calls")[0]["n"],
        hangup_hotspots=_rows(
            con,
            "SELECT * FROM hotspots_by_scope WHERE scope = ? AND hangups > 0 "
            "ORDER BY hangups DESC, application, page, form, item LIMIT ?",
            scope,
            TOP_ITEMS,
        ),
        error_hotspots=_rows(
            con,
            "SELECT * FROM hotspots_by_scope WHERE scope = ? AND errors > 0 "
            "ORDER BY errors DESC, application, page, form, item LIMIT ?",
            scope,
            TOP_ITEMS,
        ),
        items=_rows(con, items_sql, scope),
        coverage=coverage,
        coverage_days=_rows(
            con,
            "SELECT phone, day, state FROM coverage_days WHERE phone IN (SELECT unnest(?))",
            [r["phone"] for r in coverage],
        ),
        phones=phones,
        quality_rules=_rows(
            con,
            "SELECT level, rule, any_value(identity) AS identity, count(*) AS cases, "
            "CAST(sum(abs(difference)) AS BIGINT) AS total_difference "
            "FROM report_quality GROUP BY level, rule ORDER BY cases DESC, rule",
        ),
        quality_rows=_rows(con, "SELECT * FROM report_quality LIMIT ?", QUALITY_ROWS),
        partial=partial_windows(con),
    )


# -- charts -------------------------------------------------------------------------------------


def short_app(url: str) -> str:
    """An application's last path segment (``start.php``): URLs are too long for axis labels."""
    return url.rstrip("/").rsplit("/", 1)[-1] or url


def item_label(row: dict[str, Any], *, with_app: bool = True) -> str:
    label = f"{row['form']} · {row['item']}"
    return f"{short_app(row['application'])}: {label}" if with_app else label


def _layout(title: str, **more: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01},
        "height": CHART_HEIGHT,
        "margin": {"l": 60, "r": 30, "t": 50, "b": 50},
        "legend": {"orientation": "h", "y": -0.18},
        "template": "plotly_white",
    }
    layout.update(more)
    return layout


def charts(data: ReportData, go: Any) -> list[tuple[str, Any]]:
    """``(section heading, figure)`` in page order; sections without data are left out."""
    out: list[tuple[str, Any]] = []
    days = [r["day"] for r in data.trend]
    if data.trend:
        fig = go.Figure()
        for name, label, colour in ENDINGS:
            fig.add_bar(x=days, y=[r[name] for r in data.trend], name=label, marker_color=colour)
        fig.add_scatter(
            x=days,
            y=[r["transfer_rate"] for r in data.trend],
            name="transfer rate (right axis)",
            yaxis="y2",
            mode="lines+markers",
            line={"color": "#000000", "width": 2},
        )
        fig.update_layout(
            _layout(
                "Calls per day, by how they ended",
                barmode="stack",
                yaxis={"title": "calls"},
                yaxis2={
                    "title": "transfer rate",
                    "overlaying": "y",
                    "side": "right",
                    "tickformat": ".0%",
                    "rangemode": "tozero",
                },
            )
        )
        out.append(("Calls and transfer rate", fig))
        fig = go.Figure()
        for app in sorted({r["application"] for r in data.trend_by_app}):
            rows = [r for r in data.trend_by_app if r["application"] == app]
            fig.add_scatter(
                x=[r["day"] for r in rows],
                y=[r["calls"] for r in rows],
                name=short_app(app),
                mode="lines+markers",
            )
        fig.update_layout(_layout("Calls per day, by application", yaxis={"title": "calls"}))
        out.append(("Applications", fig))
        fig = go.Figure(
            go.Scatter(
                x=days,
                y=[r["errors_per_call"] for r in data.trend],
                mode="lines+markers",
                line={"color": "#CC79A7"},
                name="recognition errors per call",
            )
        )
        fig.update_layout(
            _layout("Recognition errors (no match + no input) per call", yaxis={"title": ""})
        )
        out.append(("Recognition errors", fig))
    if data.by_phone:
        fig = go.Figure()
        for phone in sorted({r["phone"] for r in data.by_phone}):
            rows = [r for r in data.by_phone if r["phone"] == phone]
            fig.add_scatter(
                x=[r["day"] for r in rows], y=[r["calls"] for r in rows], name=phone, mode="lines"
            )
        shown = len({r["phone"] for r in data.by_phone})
        title = "Calls per day, by phone number"
        if shown < data.numbers:
            title += f" (the {shown} busiest of {data.numbers})"
        fig.update_layout(_layout(title, yaxis={"title": "calls"}))
        out.append(("Phone numbers", fig))
    if data.hangup_hotspots:
        rows = list(reversed(data.hangup_hotspots))
        fig = go.Figure(
            go.Bar(
                x=[r["hangups"] for r in rows],
                y=[item_label(r) for r in rows],
                orientation="h",
                marker_color=["#E69F00" if r["kind"] == "transfer" else "#D55E00" for r in rows],
                customdata=[[r["hangup_share"], r["hangup_rate"], r["kind"]] for r in rows],
                hovertemplate="%{y}<br>%{x} calls lost (%{customdata[2]} item)<br>"
                "%{customdata[0]:.1%} of the application's, %{customdata[1]:.1%} of visits"
                "<extra></extra>",
            )
        )
        fig.update_layout(
            _layout(
                "Where calls are lost: hang-ups in menus (red), at transfer points (orange)",
                height=max(CHART_HEIGHT, 28 * len(rows) + 100),
                margin={"l": 330, "r": 30, "t": 50, "b": 40},
                xaxis={"title": "calls"},
            )
        )
        out.append(("Hang-up hotspots", fig))
    if data.error_hotspots:
        rows = list(reversed(data.error_hotspots))
        fig = go.Figure()
        for name, label, colour in (
            ("nomatch", "no match", "#CC79A7"),
            ("noinput", "no input", "#F0E442"),
        ):
            fig.add_bar(
                x=[r[name] for r in rows],
                y=[item_label(r) for r in rows],
                orientation="h",
                name=label,
                marker_color=colour,
            )
        fig.update_layout(
            _layout(
                "Where recognition fails",
                barmode="stack",
                height=max(CHART_HEIGHT, 28 * len(rows) + 100),
                margin={"l": 330, "r": 30, "t": 50, "b": 40},
                xaxis={"title": "recognition errors"},
            )
        )
        out.append(("Recognition hotspots", fig))
    for app in sorted({r["application"] for r in data.items}):
        rows = [r for r in data.items if r["application"] == app and r["visits"] > 0]
        if not rows:
            continue
        rows.reverse()
        fig = go.Figure()
        for name, label, colour in SEGMENTS:
            fig.add_bar(
                x=[r[name] / r["visits"] for r in rows],
                y=[item_label(r, with_app=False) for r in rows],
                orientation="h",
                name=label,
                marker_color=colour,
                customdata=[r[name] for r in rows],
                hovertemplate="%{y}: %{customdata} " + label + " (%{x:.1%} of visits)"
                "<extra></extra>",
            )
        fig.update_layout(
            _layout(
                f"How visits end, per item: {short_app(app)} (busiest item on top)",
                barmode="stack",
                height=max(CHART_HEIGHT, 26 * len(rows) + 110),
                margin={"l": 300, "r": 30, "t": 50, "b": 40},
                xaxis={"tickformat": ".0%", "range": [0, 1]},
            )
        )
        out.append((f"Item outcomes: {short_app(app)}", fig))
    if data.coverage_days:
        phones = sorted({r["phone"] for r in data.coverage_days})
        all_days = sorted({r["day"] for r in data.coverage_days})
        code = {state: i for i, (state, _) in enumerate(COVERAGE_STATES)}
        cell = {(r["phone"], r["day"]): code[r["state"]] for r in data.coverage_days}
        last = len(COVERAGE_STATES) - 1
        scale = []
        for i, (_, colour) in enumerate(COVERAGE_STATES):
            scale += [[i / (last + 1), colour], [(i + 1) / (last + 1), colour]]
        names = [state for state, _ in COVERAGE_STATES]
        fig = go.Figure(
            go.Heatmap(
                x=all_days,
                y=phones,
                z=[[cell.get((p, d), last) for d in all_days] for p in phones],
                text=[[names[cell.get((p, d), last)] for d in all_days] for p in phones],
                zmin=-0.5,
                zmax=last + 0.5,
                colorscale=scale,
                showscale=False,
                xgap=1,
                ygap=2,
                hovertemplate="%{y} %{x}: %{text}<extra></extra>",
            )
        )
        fig.update_layout(
            _layout(
                "Data coverage per day: held (green), failed (red), never fetched (grey)"
                + (
                    f" · the {len(phones)} least covered of {data.phones}"
                    if len(phones) < data.phones
                    else ""
                ),
                height=max(220, 28 * len(phones) + 120),
                margin={"l": 110, "r": 30, "t": 50, "b": 40},
            )
        )
        out.append(("Data coverage", fig))
    return out


# -- page ---------------------------------------------------------------------------------------


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
        f"<p class=meta>Store {html.escape(str(root.resolve()))} · range asked {asked} · "
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
