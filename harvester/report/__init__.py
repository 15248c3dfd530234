"""``harvester report``: one self-contained HTML file of charts over the bundled views.

Why it exists: the views answer "where do callers struggle, hang up or get transferred, and how
does that change" one table at a time; an analyst wants it at a glance, in a file that opens
offline and can be mailed. plotly is the optional ``report`` extra, imported only when a report
is built. A --from/--to range restricts every figure the way ``harvester query`` does (windows
wholly inside it); the coverage section then counts the days of that range.

The package reads in the order a report is made: ``data`` runs the SQL over the views and shapes
it into ``ReportData``, ``figures`` turns that into plotly charts, ``page`` assembles the HTML
document; this module ties them together and writes the file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harvester.analysis import Window, check_store, connect, partial_windows, reading_store
from harvester.errors import UsageError
from harvester.outputs import check_output, write_text
from harvester.report.data import ReportData, collect
from harvester.report.figures import charts
from harvester.report.page import render_page

__all__ = ["ReportData", "charts", "collect", "render_page", "write_report"]


def write_report(
    root: Path,
    out: Path,
    *,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    flag: str = "out",
    store_flag: str = "store",
    on_partial_windows: Callable[[Sequence[Window]], None] | None = None,
) -> None:
    """Write the report for the store at ``root`` (restricted to ``date_from``..``date_to``).

    ``out`` is checked before any work (:func:`harvester.outputs.check_output`): never inside
    the store, a regular file replaced by rename, a device or FIFO written through. Errors name
    ``out`` and ``root`` as ``flag`` and ``store_flag``. ``on_partial_windows`` is told the
    windows the range leaves out for straddling a bound (:func:`harvester.analysis.connect`),
    before the report is written.
    """
    go = _plotly()
    check_store(root, flag=store_flag)
    target = check_output(out, flag, store=root, streams_ok=True)
    con = connect(root, date_from=date_from, date_to=date_to)
    try:
        with reading_store(root):  # a damaged file: one line naming it
            if on_partial_windows is not None:
                on_partial_windows(partial_windows(con))
            data = collect(con)
    finally:
        con.close()
    page = render_page(data, root, date_from, date_to, go)
    write_text(target, [page])


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise UsageError(
            "report: plotly is not installed; install it with: pip install 'harvester[report]'"
        ) from None
    return go
