"""The report's charts: ``ReportData`` in, plotly figures out, one per page section.

Why a module of its own: the figures are the bulk of the report and change for reasons of their
own (labels, colours, sizes), apart from which numbers are read and how the page is laid out.
plotly is never imported here: ``write_report`` imports ``plotly.graph_objects`` only when a
report is built (it is the optional ``report`` extra) and hands it in as ``go``.
"""

from __future__ import annotations

from typing import Any

from harvester.report.data import ENDINGS, ReportData

CHART_HEIGHT = 380
# Per-item outcome segments (shares of visits), in the order they stack.
SEGMENTS = (
    ("filled", "filled", "#009E73"),
    ("transfer", "transferred", "#0072B2"),
    ("nomatch", "no match", "#CC79A7"),
    ("noinput", "no input", "#F0E442"),
    ("hangups", "hung up / not transferred", "#D55E00"),
)
COVERAGE_STATES = (("held", "#009E73"), ("failed", "#D55E00"), ("missing", "#BBBBBB"))


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
