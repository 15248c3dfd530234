"""The bundled views on real data: a store pulled from the simulator through the real CLI, every
view's numbers checked against the simulator's ground truth, plus hand-made stores that break
the API notes' identities, and the query and export-duckdb commands."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from harvester.analysis import bundled_views, connect, queries_dir
from harvester.demo import SHOWCASE
from harvester.items import COLUMNS, item_schema
from harvester.jobs import Job
from harvester.simulator import (
    APPLICATIONS,
    MENU,
    TRANSFER,
    SimulatorServer,
    SimulatorSettings,
)
from harvester.store import FetchMeta, Store
from tests.support import cli_env, days, run_cli, write_config

# One pull for the whole module (every test here reads it); one xdist worker runs them all.
pytestmark = pytest.mark.xdist_group("views")

ROOT = Path(__file__).resolve().parents[1]
TODAY = dt.date(2024, 3, 20)
START, END = dt.date(2024, 3, 1), dt.date(2024, 3, 14)
PHONES = ("6175550101", "6175550103")  # the simulated account's only numbers: ALL = their sum
KIND = {
    (app.url, it.page, it.form, it.item): {MENU: "ordinary", TRANSFER: "transfer"}.get(
        it.kind, "terminal"
    )
    for app in APPLICATIONS
    for it in app.items
}
BASE_RELATIONS = {
    "flow_files",
    "flow_files_unfiltered",
    "ledger_files",
    "ledger_latest",
    "ledger_current",
    "raw_files",
    "raw_replies",
    "query_range",
}
VIEWS = [name for name, _ in bundled_views()]


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SimulatorServer]]:
    """Two numbers and ALL, two weeks of days, pulled by ``harvester pull``."""
    tmp = tmp_path_factory.mktemp("views")
    settings = SimulatorSettings(phones=PHONES, limit=1000, window_seconds=60, today=TODAY)
    with SimulatorServer(settings) as sim:
        config = write_config(tmp, sim, phones=[*PHONES, "ALL"], start=START, end=END)
        pull = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=cli_env(sim))
        assert pull.returncode == 0, pull.stderr
        yield tmp / "store", sim


@pytest.fixture(scope="module")
def con(pulled: tuple[Path, SimulatorServer]) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(pulled[0])
    yield connection
    connection.close()


def query(con: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> list[dict[str, Any]]:
    result = con.execute(sql, list(params))
    names = [d[0] for d in result.description or []]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def truth_endings(sim: SimulatorServer, phone: str, day: dt.date) -> dict[str, dict[str, int]]:
    """Per application: how the simulator's calls ended, from its rows and its graphs' kinds."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for app, page, form, item, visits, _, _, _, transfer, disconnect in sim.truth_rows(
        phone, day, day
    ):
        kind = KIND[(app, page, form, item)]
        ends = out[app]
        ends["calls"] += disconnect
        ends["transferred"] += transfer
        ends["transfer_failed"] += visits - transfer if kind == "transfer" else 0
        ends["self_service"] += visits if kind == "terminal" else 0
        ends["abandoned"] += disconnect if kind == "ordinary" else 0
    return out


# -- the SQL files ------------------------------------------------------------------------------


def test_every_query_file_has_a_header_with_its_columns_and_defines_its_view() -> None:
    files = sorted(queries_dir().glob("*.sql"))
    assert len(files) >= 8
    for path in files:
        text = path.read_text()
        header = text.split("CREATE", 1)[0]
        assert header.startswith(f"-- {path.stem}:"), f"{path.name}: header must name the view"
        assert "Columns" in header, f"{path.name}: header must list the columns"
        assert "Answers" in header, f"{path.name}: header must say what it answers"
        assert f"CREATE OR REPLACE VIEW {path.stem} AS" in text, path.name


def test_every_view_runs_on_an_empty_store_too(tmp_path: Path) -> None:
    Store(tmp_path / "empty").ensure_writable("day")
    empty = connect(tmp_path / "empty")
    try:
        for view in VIEWS:
            assert empty.execute(f"SELECT * FROM {view}").fetchall() == [], view
    finally:
        empty.close()


def test_views_named_in_the_docs_and_commands_exist() -> None:
    texts = [p.read_text() for p in (ROOT / "docs").glob("*.md")]
    texts.append((ROOT / "README.md").read_text())
    texts += [p.read_text() for p in (ROOT / "harvester" / "cli").glob("*.py")]
    texts += [sql for _, sql in SHOWCASE]
    texts.append((ROOT / "harvester" / "demo.py").read_text())
    named = set()
    for text in texts:
        # a bare name after FROM; not a table function (``read_parquet(``) or a catalog-qualified
        # table of another engine (``delta.voicetrends...`` in docs/reading.md)
        named |= set(re.findall(r"\bFROM\s+([a-z_][a-z0-9_]*)\b(?![(.\w])", text))
        named |= set(re.findall(r"harvester query (?:--\S+ \S+ )*([a-z_][a-z0-9_]*)\b", text))
    named -= {"view", "that", "the"}  # prose: "SELECT * FROM that view"
    known = set(VIEWS) | BASE_RELATIONS
    assert named, "found no view named in the docs"
    assert named <= known, f"named but not bundled: {sorted(named - known)}"


# -- the numbers against ground truth -----------------------------------------------------------


def test_every_view_runs_and_data_quality_is_empty_on_simulated_data(
    con: duckdb.DuckDBPyConnection,
) -> None:
    for view in VIEWS:
        con.execute(f"SELECT * FROM {view}").fetchall()
    assert query(con, "SELECT * FROM data_quality") == []


def test_connections_drop_insertion_order_unless_the_caller_keeps_it(
    pulled: tuple[Path, SimulatorServer],
) -> None:
    # dropping it is what keeps a full read of diagnostic_flow near native tables' speed
    setting = "SELECT current_setting('preserve_insertion_order')"
    with connect(pulled[0]) as default:
        assert default.execute(setting).fetchone() == (False,)
    with connect(pulled[0], config={"preserve_insertion_order": True}) as kept:
        assert kept.execute(setting).fetchone() == (True,)
        ordered = query(kept, "SELECT * FROM diagnostic_flow")
    with connect(pulled[0]) as default:
        unordered = query(default, "SELECT * FROM diagnostic_flow")
    assert len(ordered) > 100 and sorted(map(repr, unordered)) == sorted(map(repr, ordered))


def test_item_kinds_match_the_simulated_call_flows(con: duckdb.DuckDBPyConnection) -> None:
    kinds = query(con, "SELECT * FROM item_kinds")
    assert len(kinds) >= 20
    for row in kinds:
        assert row["kind"] == KIND[(row["application"], row["page"], row["form"], row["item"])]


def test_calls_per_phone_day_and_application_equal_the_ground_truth(
    pulled: tuple[Path, SimulatorServer], con: duckdb.DuckDBPyConnection
) -> None:
    _, sim = pulled
    numbers = query(con, "SELECT * FROM calls")
    merged = query(con, "SELECT *, 'ALL' AS phone FROM calls_all")
    assert {r["phone"] for r in numbers} == set(PHONES)
    got = {(r["phone"], r["day"], r["application"]): r for r in numbers + merged}
    expected = {}
    for phone in (*PHONES, "ALL"):
        for day in days(START, END):
            for app, ends in truth_endings(sim, phone, day).items():
                expected[(phone, day, app)] = dict(ends)
            total = sum(r["calls"] for k, r in got.items() if k[:2] == (phone, day))
            assert total == sim.simulator.calls(phone, day, day), (phone, day)
    assert set(got) == set(expected)
    for key, ends in expected.items():
        row = got[key]
        assert {k: row[k] for k in ends} == ends, key
        assert row["calls"] == sum(ends[k] for k in ends if k != "calls"), key
        assert row["window_start"] == row["window_end"] == row["day"] and row["days"] == 1
        assert row["transfer_rate"] == pytest.approx(ends["transferred"] / ends["calls"])
        assert row["abandon_rate"] == pytest.approx(ends["abandoned"] / ends["calls"])


def test_numbers_add_up_to_all_and_no_view_mixes_the_two(con: duckdb.DuckDBPyConnection) -> None:
    assert query(con, "SELECT * FROM calls WHERE phone = 'ALL'") == []
    assert query(con, "SELECT * FROM item_outcomes WHERE phone = 'ALL'") == []
    for view in ("calls_all", "item_outcomes_all", "calls_all_summary", "daily_trend_all"):
        columns = [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description]
        assert "phone" not in columns and "scope" not in columns, view
    pairs = [
        ("calls", "calls_all", "day, application", "calls, transferred, self_service, abandoned"),
        ("item_outcomes", "item_outcomes_all", "day, application, page, form, item", "visits"),
        ("daily_trend", "daily_trend_all", "day, application", "calls, errors, visits"),
        ("calls_summary", "calls_all_summary", "application", "calls, transfer_failed, errors"),
        ("hotspots", "hotspots_all", "application, page, form, item", "visits, hangups, errors"),
    ]
    for numbers, merged, keys, counts in pairs:
        summed = ", ".join(f"sum({c}) AS {c}" for c in counts.split(", "))
        left = con.execute(
            f"SELECT {keys}, {summed} FROM {numbers} GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        right = con.execute(f"SELECT {keys}, {counts} FROM {merged} ORDER BY ALL").fetchall()
        assert left == right and left, (numbers, merged)


def test_item_outcomes_rates_are_shares_of_visits(con: duckdb.DuckDBPyConnection) -> None:
    rows = query(con, "SELECT * FROM item_outcomes")
    assert rows
    for r in rows:
        assert r["errors"] == r["nomatch"] + r["noinput"]
        assert r["fill_rate"] == pytest.approx(r["filled"] / r["visits"])
        assert r["error_rate"] == pytest.approx(r["errors"] / r["visits"])
        assert r["hangup_rate"] == pytest.approx(r["hangups"] / r["visits"])
        expected_hangups = {
            "ordinary": r["disconnect"],
            "transfer": r["visits"] - r["transfer"],
            "terminal": 0,
        }[r["kind"]]
        assert r["hangups"] == expected_hangups


def test_hotspots_shares_sum_to_one_per_application_and_ranks_follow_counts(
    pulled: tuple[Path, SimulatorServer], con: duckdb.DuckDBPyConnection
) -> None:
    _, sim = pulled
    for view in ("hotspots", "hotspots_all"):
        rows = query(con, f"SELECT * FROM {view}")
        troubles = [r["trouble"] for r in rows]
        assert troubles == sorted(troubles, reverse=True)
        for app in {r["application"] for r in rows}:
            mine = [r for r in rows if r["application"] == app]
            assert sum(r["hangup_share"] for r in mine) == pytest.approx(1.0)
            assert sum(r["error_share"] for r in mine) == pytest.approx(1.0)
            top = min(mine, key=lambda r: r["hangup_rank"])
            assert top["hangups"] == max(r["hangups"] for r in mine)
    # the merged number's hang-ups per item are the simulator's, summed over the range
    truth: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for app, page, form, item, visits, _, _, _, transfer, disconnect in sim.truth_rows(
        "ALL", START, END
    ):
        kind = KIND[(app, page, form, item)]
        lost = {"ordinary": disconnect, "transfer": visits - transfer, "terminal": 0}[kind]
        truth[(app, page, form, item)] += lost
    got = {
        (r["application"], r["page"], r["form"], r["item"]): r["hangups"]
        for r in query(con, "SELECT * FROM hotspots_all")
    }
    assert got == dict(truth)


def test_daily_trend_adds_up_the_numbers_per_day(con: duckdb.DuckDBPyConnection) -> None:
    trend = query(con, "SELECT * FROM daily_trend")
    calls = query(con, "SELECT * FROM calls")
    for row in trend:
        same = [
            c for c in calls if (c["day"], c["application"]) == (row["day"], row["application"])
        ]
        assert row["phones"] == len(same)
        assert row["calls"] == sum(c["calls"] for c in same)
        assert row["errors"] == sum(c["errors"] for c in same)
    assert [r["day"] for r in trend] == sorted(r["day"] for r in trend)


def test_coverage_matches_the_ledger(con: duckdb.DuckDBPyConnection) -> None:
    coverage = {r["phone"]: r for r in query(con, "SELECT * FROM coverage")}
    assert set(coverage) == {*PHONES, "ALL"}
    for phone, row in coverage.items():
        assert (row["first_day"], row["last_day"], row["days"]) == (START, END, 14)
        assert (row["days_held"], row["days_failed"], row["days_missing"]) == (14, 0, 0)
        assert row["scope"] == ("all" if phone == "ALL" else "number")
    held = query(con, "SELECT count(*) AS n FROM ledger_current")[0]["n"]
    assert held == sum(r["days_held"] for r in coverage.values())


def test_showcase_queries_of_the_demo_show_rows(pulled: tuple[Path, SimulatorServer]) -> None:
    for title, sql in SHOWCASE:
        result = run_cli(["query", "--store", str(pulled[0]), "--format", "json", sql])
        assert result.returncode == 0, (title, result.stderr)
        assert json.loads(result.stdout), title


# -- harvester query and export-duckdb ---------------------------------------------------------


def test_query_renders_every_format_and_restricts_dates(
    pulled: tuple[Path, SimulatorServer], tmp_path: Path
) -> None:
    store = str(pulled[0])
    table = run_cli(["query", "--store", store, "--limit", "3", "calls_all"])
    assert table.returncode == 0, table.stderr
    assert "transfer_rate" in table.stdout and "(3 of " in table.stdout
    csv = run_cli(["query", "--store", store, "--format", "csv", "coverage"])
    assert csv.returncode == 0 and csv.stdout.startswith("scope,phone,first_day")
    out = tmp_path / "calls.parquet"
    parquet = run_cli(
        ["query", "--store", store, "--format", "parquet", "--out", str(out), "calls"]
    )
    assert parquet.returncode == 0, parquet.stderr
    assert duckdb.sql(f"SELECT count(DISTINCT phone) FROM '{out}'").fetchall() == [(2,)]
    ranged = run_cli(
        [
            *("query", "--store", store, "--format", "json", "--from", "2024-03-05"),
            *("--to", "2024-03-07", "SELECT day, sum(calls) AS calls FROM calls_all GROUP BY day"),
        ]
    )
    assert ranged.returncode == 0, ranged.stderr
    sim = pulled[1].simulator
    got = {row["day"]: row["calls"] for row in json.loads(ranged.stdout)}
    assert got == {
        d.isoformat(): sim.calls("ALL", d, d)
        for d in days(dt.date(2024, 3, 5), dt.date(2024, 3, 7))
    }
    assert "straddle" not in ranged.stderr  # daily windows never straddle a day


def test_query_errors_are_duckdbs_message_and_exit_2(pulled: tuple[Path, SimulatorServer]) -> None:
    store = str(pulled[0])
    bad = run_cli(["query", "--store", store, "SELEC calls FROM calls"])
    assert bad.returncode == 2 and "syntax error" in bad.stderr.lower(), bad.stderr
    missing = run_cli(["query", "--store", store, "no_such_view"])
    assert missing.returncode == 2 and "no_such_view" in missing.stderr, missing.stderr
    backwards = run_cli(
        ["query", "--store", store, "--from", "2024-03-05", "--to", "2024-03-01", "calls"]
    )
    assert backwards.returncode == 2 and "after" in backwards.stderr, backwards.stderr


def test_from_to_leaves_out_weeks_that_straddle_the_range_and_says_so(
    pulled: tuple[Path, SimulatorServer], tmp_path: Path
) -> None:
    sim = pulled[1]
    monday = dt.date(2024, 2, 26)
    config = write_config(
        tmp_path, sim, phones=["ALL"], start=monday, end=dt.date(2024, 3, 17), window="week"
    )
    pull = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=cli_env(sim))
    assert pull.returncode == 0, pull.stderr
    store = str(tmp_path / "store")
    result = run_cli(
        [
            *("query", "--store", store, "--format", "json"),
            *("--from", "2024-03-01", "--to", "2024-03-14", "calls_all"),
        ]
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {(r["window_start"], r["window_end"], r["days"]) for r in rows} == {
        ("2024-03-04", "2024-03-10", 7)
    }
    assert sum(r["calls"] for r in rows) == sim.simulator.calls(
        "ALL", dt.date(2024, 3, 4), dt.date(2024, 3, 10)
    )
    assert "2 window(s)" in result.stderr and "2024-02-26..2024-03-17" in result.stderr


def test_export_duckdb_file_shows_data_pulled_after_it(
    pulled: tuple[Path, SimulatorServer], tmp_path: Path
) -> None:
    sim = pulled[1]
    env = cli_env(sim)
    empty = run_cli(["export-duckdb", "--store", str(tmp_path), str(tmp_path / "x.duckdb")])
    assert empty.returncode == 2 and "pull" in empty.stderr, empty.stderr

    def pull(end: dt.date) -> None:
        config = write_config(tmp_path, sim, phones=[PHONES[0], "ALL"], start=START, end=end)
        result = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=env)
        assert result.returncode == 0, result.stderr

    def held_days(file: Path) -> tuple[Any, ...] | None:
        with duckdb.connect(str(file), read_only=True) as db:
            return db.execute(
                "SELECT count(DISTINCT day), (SELECT count(*) FROM hotspots_all) > 0 FROM calls"
            ).fetchone()

    pull(START + dt.timedelta(days=2))
    file = tmp_path / "elsewhere" / "voicetrends.duckdb"
    file.parent.mkdir()
    export = run_cli(["export-duckdb", "--store", str(tmp_path / "store"), str(file)])
    assert export.returncode == 0, export.stderr
    assert held_days(file) == (3, True)
    assert not list(file.parent.glob(".*"))  # no temp file left beside it
    pull(START + dt.timedelta(days=4))
    assert held_days(file) == (5, True)
    with duckdb.connect(str(file), read_only=True) as db:
        views = {r[0] for r in db.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    assert set(VIEWS) <= views


# -- hand-made stores: broken identities, failed and missing days --------------------------------

D1, D2, D3, D4 = (dt.date(2024, 1, 10) + dt.timedelta(days=i) for i in range(4))
NUMBER = "6170000001"
ROWS_APP, GROUP_APP, DUP_APP = (f"https://x.example/{n}.php" for n in ("rows", "group", "dup"))
AT = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
Item = tuple[str, str, str, str, int, int, int, int, int, int]
QUALITY_KEY = (
    *("rule", "level", "phone", "window_start", "application", "item"),
    *("expected", "actual", "difference"),
)


def _parsed(rows: list[Item]) -> pa.Table:
    return pa.table(
        {name: [r[i] for r in rows] for i, name in enumerate(COLUMNS)}, schema=item_schema()
    )


def _record(store: Store, jobs: list[tuple[str, dt.date, list[Item] | None]]) -> None:
    """Record each (phone, day, rows) as done, or as failed when rows is None, in one run."""
    with store.lock("test"), store.writer("test") as writer:
        for phone, day, rows in jobs:
            job = Job(phone, day, day, day)
            meta = FetchMeta(fetched_at=AT, attempts=1, http_status=200, request_path=job.path)
            if rows is None:
                writer.record_failed(job, "HTTP 500", None, meta)
            else:
                writer.record_done(job, _parsed(rows), b"{}", meta)


def broken_store(root: Path) -> Path:
    """One number and ALL over four days; each rule of data_quality broken once, on purpose."""
    store = Store(root)
    store.ensure_writable("day")
    r = ROWS_APP
    rows_app: list[Item] = [
        (r, "main.php", "main", "choice", 10, 8, 1, 1, 0, 0),  # entry: visits = calls = 10
        (r, "menu.php", "menu", "choice", 7, 4, 1, 0, 0, 1),  # 4+1+0+1 = 6, not 7
        (r, "agent.php", "agent", "xfer", 5, 2, 0, 0, 3, 4),  # disconnect 4 != 5, filled 2 != 3
        (r, "bye.php", "bye", "bye", 3, 3, 0, 0, 0, 3),  # a goodbye, fine
        (r, "idle.php", "idle", "wait", 0, 0, 0, 0, 0, 0),  # no visits: rates NULL, fine
        (r, "neg.php", "neg", "x", 1, 2, -1, 0, 0, 0),  # adds up, but nomatch < 0
        (r, "over.php", "over", "xfer2", 2, 3, 0, 0, 3, 2),  # transfers 3 of 2 visits
    ]
    g = GROUP_APP
    group_app: list[Item] = [
        (g, "main.php", "main", "choice", 10, 9, 1, 0, 0, 0),
        (g, "bye.php", "bye", "bye", 6, 6, 0, 0, 0, 6),
        (g, "hang.php", "hang", "choice", 9, 7, 0, 0, 0, 2),  # calls 8: no item has 8 visits
    ]
    dup: list[Item] = [(DUP_APP, "a.php", "a", "a", 0, 0, 0, 0, 0, 0)] * 2  # twice in a reply
    merged: list[Item] = [*group_app[:2], (g, "hang.php", "hang", "choice", 8, 6, 0, 0, 0, 2)]
    _record(
        store,
        [
            (NUMBER, D1, rows_app),
            (NUMBER, D2, group_app + dup),
            ("ALL", D2, merged),  # ALL's hang.php: 8 visits and 6 filled, less than the number's
            (NUMBER, D4, None),  # failed; D3 never fetched
        ],
    )
    _record(store, [("ALL", D2, None)])  # a re-fetch that failed: the data above stays
    return root


def test_data_quality_names_every_broken_identity_and_by_how_much(tmp_path: Path) -> None:
    con = connect(broken_store(tmp_path / "broken"))
    try:
        found = sorted(
            tuple(r[k] for k in QUALITY_KEY) for r in query(con, "SELECT * FROM data_quality")
        )
        identities = query(
            con, "SELECT identity FROM data_quality WHERE level = 'account' ORDER BY identity"
        )
        idle = query(con, "SELECT * FROM item_outcomes WHERE item = 'wait'")
    finally:
        con.close()
    row, account = "row", "account"
    assert found == sorted(
        [
            ("visits_add_up", row, NUMBER, D1, ROWS_APP, "choice", 7, 6, -1),
            ("ends_call", row, NUMBER, D1, ROWS_APP, "xfer", 5, 4, -1),
            ("filled_is_transfer", row, NUMBER, D1, ROWS_APP, "xfer", 3, 2, -1),
            ("no_negative", row, NUMBER, D1, ROWS_APP, "x", 0, -1, -1),
            ("transfer_in_visits", row, NUMBER, D1, ROWS_APP, "xfer2", 2, 3, 1),
            ("calls_equal_entry", "application", NUMBER, D2, GROUP_APP, None, 8, 9, 1),
            ("unique_item", row, NUMBER, D2, DUP_APP, "a", 1, 2, 1),
            ("all_covers_numbers", account, "ALL", D2, GROUP_APP, "choice", 8, 9, 1),
            ("all_covers_numbers", account, "ALL", D2, GROUP_APP, "choice", 6, 7, 1),
        ]
    )
    assert [r["identity"] for r in identities] == [
        "ALL filled >= sum of the numbers' filled",
        "ALL visits >= sum of the numbers' visits",
    ]
    # an item without visits: every rate is NULL, nothing divides by zero
    assert idle and all(idle[0][k] is None for k in ("fill_rate", "error_rate", "hangup_rate"))


def test_coverage_counts_held_failed_and_missing_days(tmp_path: Path) -> None:
    root = broken_store(tmp_path / "broken")
    con = connect(root)
    try:
        states = {
            (r["phone"], r["day"]): (r["state"], r["retry_failed"])
            for r in query(con, "SELECT * FROM coverage_days")
        }
        coverage = {r["phone"]: r for r in query(con, "SELECT * FROM coverage")}
    finally:
        con.close()
    assert states == {
        (NUMBER, D1): ("held", False),
        (NUMBER, D2): ("held", False),
        (NUMBER, D3): ("missing", False),
        (NUMBER, D4): ("failed", False),
        ("ALL", D1): ("missing", False),
        ("ALL", D2): ("held", True),  # its re-fetch failed; the first fetch's rows stay
        ("ALL", D3): ("missing", False),
        ("ALL", D4): ("missing", False),
    }
    number, merged = coverage[NUMBER], coverage["ALL"]
    assert (number["days"], number["days_held"], number["days_failed"]) == (4, 2, 1)
    assert (number["days_missing"], number["held_share"]) == (1, 0.5)
    assert (merged["days_held"], merged["days_missing"], merged["days_retry_failed"]) == (1, 3, 1)
    # with --from/--to the span is the range asked, beyond the data too
    con = connect(root, date_from=D1 - dt.timedelta(days=1), date_to=D4 + dt.timedelta(days=2))
    try:
        ranged = {r["phone"]: r for r in query(con, "SELECT * FROM coverage")}
    finally:
        con.close()
    assert (ranged[NUMBER]["days"], ranged[NUMBER]["days_missing"]) == (7, 4)
