"""The report's numbers: every query it runs over the bundled views, shaped into ``ReportData``.

Why a module of its own: every number on the page comes from a bundled view (``queries/*.sql``),
so the report and ``harvester query`` never disagree; keeping all the SQL here, apart from the
figures and the page, makes that easy to check and lets the data be read (and tested) without
plotly. It also decides what the page is about: the merged number ``ALL`` when the store holds
it for the range (it is the whole account, numbers not harvested included), else the harvested
numbers added up; the busiest numbers for the per-number chart and the least covered phones (ALL
included) for the coverage chart and table, so an account with hundreds of numbers still gets a
readable page. The connection's --from/--to range restricts every query the way ``harvester
query`` does (windows wholly inside it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import duckdb

from harvester.analysis import partial_windows
from harvester.store import retry_read

# Items per hotspot chart: enough to show the long tail starts, few enough to read the labels.
TOP_ITEMS = 12
# Phones drawn as lines (the busiest); the coverage chart and table show 4x as many (the least
# covered): a big account has hundreds of numbers, and a chart of them all shows nothing.
MAX_PHONES_CHARTED = 10
# Rows of the data-quality table shown in full; the rest are counted per rule above it.
QUALITY_ROWS = 20
# One colour per call ending, the same in every chart (colour-blind-safe Okabe-Ito hues).
ENDINGS = (
    ("transferred", "transferred to an agent", "#0072B2"),
    ("transfer_failed", "ended at a transfer point, not transferred", "#E69F00"),
    ("self_service", "finished in self-service", "#009E73"),
    ("abandoned", "hung up in a menu", "#D55E00"),
)

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
        # data_quality's own order: a table made from it keeps none (the connection drops
        # insertion order), so the first rows are asked for by it
        quality_rows=_rows(
            con,
            "SELECT * FROM report_quality "
            "ORDER BY window_start, phone, application, level, rule, page, form, item LIMIT ?",
            QUALITY_ROWS,
        ),
        partial=partial_windows(con),
    )
