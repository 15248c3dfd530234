"""Request economy end to end: real pulls and syncs over loopback against the simulator.

Each test judges what reached the server (the simulator's request log) and what the store holds
(every day equal to the simulator's day-by-day truth); the planner itself is tested in-process
in tests/test_economy.py.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import time
from pathlib import Path
from typing import Any

from harvester.simulator import Shape, SimulatorServer, SimulatorSettings
from harvester.store.provenance import load_economy, provenance_counts
from tests.support import (
    assert_store_matches_truth,
    cli_env,
    run_cli,
    start_cli,
    store_connection,
    write_config,
)

D = dt.date
TODAY = D(2024, 7, 1)
QUARTER = (D(2024, 4, 1), D(2024, 6, 30))
PHONES = ("6175550110", "6175550111", "6175550112", "6175550113")
SHAPES = {
    PHONES[0]: Shape.busy(),
    PHONES[1]: Shape.never(),
    PHONES[2]: Shape.weekdays(),
    PHONES[3]: Shape.starting(D(2024, 5, 16)),
}
LIFTED = {"limit": 100_000, "window_seconds": 60}  # the quota is not what is tested here


def sim_of(**knobs: Any) -> SimulatorServer:
    settings = SimulatorSettings(**{"phones": PHONES, "today": TODAY, **LIFTED, **knobs})
    return SimulatorServer(settings)


def data_requests(sim: SimulatorServer, since: int = 0) -> int:
    return sum(1 for e in sim.log.entries()[since:] if e.path.startswith("/path/"))


def pull(config: Path, sim: SimulatorServer, *more: str) -> dict[str, Any]:
    done = run_cli(
        ["pull", "-c", str(config), "--json", "--today", TODAY.isoformat(), *more],
        env=cli_env(sim),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def days_in(start: dt.date, end: dt.date) -> int:
    return (end - start).days + 1


def test_quarter_of_four_shapes_costs_under_065_of_day_by_day_and_stores_the_truth(
    tmp_path: Path,
) -> None:
    with sim_of(shapes=SHAPES) as sim:
        start, end = QUARTER
        config = write_config(
            tmp_path, sim, phones=PHONES, start=start, end=end, economy="auto", limit=100_000
        )
        planned = run_cli(
            ["plan", "-c", str(config), "--json", "--today", TODAY.isoformat()], env=cli_env(sim)
        )
        assert planned.returncode == 0, planned.stderr
        forecast = json.loads(planned.stdout)
        summary = pull(config, sim)
        sent = data_requests(sim)
        day_by_day = len(PHONES) * days_in(start, end)
        assert forecast["requests"] == day_by_day and forecast["economy"] is True
        # no density known yet: the estimate is the dearest case (every day busy)
        assert sent <= forecast["requests_expected"] <= 1.05 * day_by_day
        assert summary["done"] == day_by_day
        assert sent <= 0.65 * day_by_day, (sent, day_by_day)
        assert_store_matches_truth(tmp_path / "store", sim, PHONES, start, end)
        kinds = provenance_counts(tmp_path / "store")
        assert sum(kinds.values()) == day_by_day
        assert kinds["empty"] > 0 and kinds["derived"] > 0, kinds
        status = run_cli(["status", "--store", str(tmp_path / "store"), "--json"])
        assert json.loads(status.stdout)["provenance"] == kinds
        text = run_cli(["status", "--store", str(tmp_path / "store")]).stdout
        assert f"derived {kinds['derived']:,}" in text
        # the raw archive holds the range replies that prove the days, compaction included
        assert unproven_days(tmp_path / "store") == []
        compacted = run_cli(["compact", "--store", str(tmp_path / "store")])
        assert compacted.returncode == 0, compacted.stderr
        assert unproven_days(tmp_path / "store") == []
        mark = len(sim.log)
        again = pull(config, sim)
        assert data_requests(sim, mark) == 0 and again["done"] == 0


def test_busy_every_day_costs_at_most_105_of_day_by_day(tmp_path: Path) -> None:
    phones = PHONES[:2]
    with sim_of(shapes={p: Shape.busy() for p in phones}) as sim:
        start, end = QUARTER
        config = write_config(tmp_path, sim, phones=phones, start=start, end=end, economy="auto")
        pull(config, sim)
        day_by_day = len(phones) * days_in(start, end)
        assert data_requests(sim) <= 1.05 * day_by_day
        assert_store_matches_truth(tmp_path / "store", sim, phones, start, end)


def test_nine_idle_numbers_of_ten_over_a_year_cost_under_012(tmp_path: Path) -> None:
    phones = tuple(f"61755501{k}" for k in range(20, 30))
    shapes = {p: Shape.never() for p in phones[1:]}
    start, end = D(2023, 7, 1), D(2024, 6, 30)
    with sim_of(phones=phones, shapes=shapes) as sim:
        config = write_config(tmp_path, sim, phones=phones, start=start, end=end, economy="auto")
        pull(config, sim)
        day_by_day = len(phones) * days_in(start, end)
        assert data_requests(sim) <= 0.12 * day_by_day, data_requests(sim)
        assert_store_matches_truth(tmp_path / "store", sim, phones, start, end)
        mark = len(sim.log)
        pull(config, sim)
        assert data_requests(sim, mark) == 0


def test_non_additive_server_is_detected_and_the_store_ends_equal_to_truth(
    tmp_path: Path,
) -> None:
    with sim_of(shapes=SHAPES, non_additive=1.0) as sim:
        start, end = D(2024, 4, 1), D(2024, 5, 31)
        config = write_config(tmp_path, sim, phones=PHONES, start=start, end=end, economy="auto")
        done = run_cli(["pull", "-c", str(config), "--today", TODAY.isoformat()], env=cli_env(sim))
        assert done.returncode == 0, done.stderr
        warnings = [line for line in done.stderr.splitlines() if "do not add up" in line]
        assert len(warnings) == 1, done.stderr
        store = tmp_path / "store"
        assert_store_matches_truth(store, sim, PHONES, start, end)
        assert load_economy(store)["derive"] is False
        assert "derived" not in provenance_counts(store)
        listed = quality_rules(store)
        assert ("ledger", "ranges_add_up") in listed, listed
        mark = len(sim.log)
        pull(config, sim)
        assert data_requests(sim, mark) == 0


def quality_rules(store: Path) -> set[tuple[str, str]]:
    from harvester.analysis import connect

    con = connect(store)
    try:
        return set(con.execute("SELECT level, rule FROM data_quality").fetchall())
    finally:
        con.close()


def sync(config: Path, sim: SimulatorServer, today: dt.date) -> dict[str, Any]:
    sim.settings.today = today
    done = run_cli(
        ["sync", "-c", str(config), "--json", "--today", today.isoformat()], env=cli_env(sim)
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def daily_syncs(tmp_path: Path, settle_days: int, syncs: int) -> tuple[int, int]:
    """Requests of ``syncs`` daily syncs (lookback 3) after a backfill, and day by day's."""
    phones = PHONES[:2]
    start = D(2024, 5, 1)
    first = D(2024, 6, 1)
    with sim_of(shapes={p: Shape.busy() for p in phones}, settle_days=settle_days) as sim:
        config = write_config(
            tmp_path, sim, phones=phones, start=start, economy="auto", lookback_days=3
        )
        sync(config, sim, first)
        sent = 0
        for k in range(1, syncs + 1):
            today = first + dt.timedelta(days=k)
            mark = len(sim.log)
            sync(config, sim, today)
            sent += data_requests(sim, mark)
            assert_store_matches_truth(
                tmp_path / "store", sim, phones, start, today - dt.timedelta(days=1)
            )
        mark = len(sim.log)
        sync(config, sim, today)
        assert data_requests(sim, mark) == 0  # a second sync the same day sends nothing
    return sent, syncs * len(phones) * (1 + 3)


def test_daily_sync_with_nothing_changed_costs_at_most_half(tmp_path: Path) -> None:
    sent, day_by_day = daily_syncs(tmp_path, settle_days=0, syncs=4)
    assert sent <= 0.5 * day_by_day, (sent, day_by_day)


def test_daily_sync_with_yesterday_growing_costs_at_most_three_quarters(tmp_path: Path) -> None:
    sent, day_by_day = daily_syncs(tmp_path, settle_days=2, syncs=4)
    assert sent <= 0.75 * day_by_day, (sent, day_by_day)


def test_economy_off_is_one_request_per_day_without_provenance(tmp_path: Path) -> None:
    with sim_of(shapes=SHAPES) as sim:
        start, end = D(2024, 6, 1), D(2024, 6, 10)
        config = write_config(tmp_path, sim, phones=PHONES, start=start, end=end, economy="off")
        pull(config, sim)
        paths = [e.path for e in sim.log.entries() if e.path.startswith("/path/")]
        assert len(paths) == len(set(paths)) == len(PHONES) * days_in(start, end)
        assert all(p.split("/")[2] == p.split("/")[3] for p in paths)  # single days only
        assert provenance_counts(tmp_path / "store") == {"fetched": len(paths)}
        assert_store_matches_truth(tmp_path / "store", sim, PHONES, start, end)


def unproven_days(store: Path) -> list[tuple[Any, ...]]:
    """Ledger records of empty/derived days whose proof's ranges are not in the raw archive."""
    con = store_connection(store)
    try:
        return con.execute(
            """
            WITH proofs AS (
                SELECT phone, period, unnest(string_split(proof, ' - ')) AS span
                FROM ledger_files WHERE provenance IN ('empty', 'derived', 'unchanged')
            ),
            ranges AS (
                SELECT phone, period, span,
                       '/path/' || split_part(span, '-', 1) || '/'
                       || coalesce(nullif(split_part(span, '-', 2), ''), span) || '/' || phone
                       AS path
                FROM proofs
            )
            SELECT * FROM ranges
            WHERE path NOT IN (SELECT request_path FROM raw_files WHERE valid)
            """
        ).fetchall()
    finally:
        con.close()


def test_pull_killed_mid_economy_resumes_equal_to_truth_and_never_records_a_day_unproven(
    tmp_path: Path,
) -> None:
    rng = random.Random(20240701)
    with sim_of(shapes=SHAPES, latency=0.01, jitter=0.03) as sim:
        start, end = QUARTER
        plan: dict[str, Any] = {"phones": PHONES, "start": start, "end": end, "economy": "auto"}
        config = write_config(tmp_path, sim, **plan, flush_jobs=4, flush_seconds=0.2)
        store = tmp_path / "store"
        for _ in range(5):
            before = len(sim.log)
            proc = start_cli(
                ["-q", "pull", "-c", str(config), "--today", TODAY.isoformat()], env=cli_env(sim)
            )
            deadline = time.monotonic() + 20
            while len(sim.log) == before and proc.poll() is None:
                assert time.monotonic() < deadline, "the pull never sent a request"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if store.joinpath("ledger").is_dir():
                assert unproven_days(store) == []
        # the resuming run is not killed: it flushes at the default sizes (a few commits, not
        # one per four jobs: ~10 s of commits)
        resume = write_config(tmp_path, sim, **plan, name="resume.toml")
        summary = pull(resume, sim)
        assert summary["failed"] == []
        assert_store_matches_truth(store, sim, PHONES, start, end)
        assert unproven_days(store) == []
        mark = len(sim.log)
        pull(resume, sim)
        assert data_requests(sim, mark) == 0


def test_long_ranges_refused_fall_back_and_the_limit_is_remembered(tmp_path: Path) -> None:
    with sim_of(shapes=SHAPES, max_range_days=20) as sim:
        start, end = QUARTER
        config = write_config(tmp_path, sim, phones=PHONES, start=start, end=end, economy="auto")
        pull(config, sim)
        store = tmp_path / "store"
        assert_store_matches_truth(store, sim, PHONES, start, end)
        learnt = load_economy(store)
        assert 1 < learnt["longest_accepted"] <= 20 < learnt["shortest_refused"], learnt
        # a later run over new days asks for nothing longer than the server accepts
        mark = len(sim.log)
        later = write_config(
            tmp_path, sim, phones=PHONES, start=start, end=D(2024, 7, 31), economy="auto"
        )
        sim.settings.today = D(2024, 8, 1)
        done = run_cli(["pull", "-c", str(later), "--today", "2024-08-01"], env=cli_env(sim))
        assert done.returncode == 0, done.stderr
        assert sim.log.count(status=400) == sum(
            1 for e in sim.log.entries()[:mark] if e.status == 400
        )


def test_a_bad_economy_value_is_refused_in_one_line_before_sending(tmp_path: Path) -> None:
    with sim_of() as sim:
        config = write_config(
            tmp_path, sim, phones=PHONES, start=D(2024, 6, 1), end=D(2024, 6, 2), economy="on"
        )
        done = run_cli(["pull", "-c", str(config)], env=cli_env(sim))
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "economy" in done.stderr, done.stderr
        assert len(sim.log) == 0 and not (tmp_path / "store").exists()
