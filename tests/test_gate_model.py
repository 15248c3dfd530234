"""The gate's window model by plain calls: explicit times, no event loop, no sleeping.

The model (:class:`harvester.gate.WindowModel`) is pure: it is told when a request goes, what its
reply said and when, and answers when the next one may go. So each scenario here is a script of
exchanges on a timeline we choose, against one server window of 150 requests per 900 s:
local monotonic time ``T0`` is server time ``SERVER_AT_T0``, 100 s into a window that resets at
``RESET`` (local ``RESET_LOCAL``). The async waiter on top is exercised by ``test_gate.py``.
"""

from __future__ import annotations

import ast
import inspect
import math
from email.utils import formatdate

import pytest

import harvester.gate
from harvester.gate import STALL_WINDOWS, WAKE_MARGIN_SECONDS, LastWindow, WindowModel
from harvester.gate.windows import Sent

LIMIT = 150
WINDOW = 900.0
T0 = 1_000.0  # local monotonic time when the script starts
SERVER_AT_T0 = 1_700_000_200.0  # 100 s into the window [1_700_000_100, 1_700_001_000)
THETA = SERVER_AT_T0 - T0  # server clock = local monotonic + THETA; the wall clock agrees
RESET = 1_700_001_000
RESET_LOCAL = RESET - THETA
LATENCY = 0.1  # request to reply; the server counts and dates it half-way
# With whole-second Dates, one reply pins the offset to about a second; a wait for a reset ends
# at most that much, plus a latency and the margin, after the true reset.
FIRST_WAIT_SLACK = 1.0 + LATENCY + WAKE_MARGIN_SECONDS


def headers(
    server_time: float,
    remaining: int | None,
    *,
    reset: float | None = None,
    limit: int = LIMIT,
    window: float = WINDOW,
) -> dict[str, str]:
    """What the server says when it counts a request at ``server_time``."""
    out = {"Date": formatdate(math.floor(server_time), usegmt=True)}
    if remaining is not None:
        end = reset if reset is not None else (math.floor(server_time / window) + 1) * window
        out |= {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(end)),
        }
    return out


def exchange(
    model: WindowModel, at: float, status: int, reply: dict[str, str] | None = None, **kw: object
) -> Sent:
    """Send at local ``at`` (the model must allow it), observe the reply ``LATENCY`` later.
    ``reply`` defaults to :func:`headers` for the server time of counting, with ``kw``."""
    assert model.verdict(at) is None, f"the model refuses a send at {at}"
    sent = model.grant(at)
    counted = at + LATENCY / 2 + THETA
    if reply is None:
        reply = headers(counted, **kw)  # type: ignore[arg-type]
    now = at + LATENCY
    model.observe(sent, status, reply, now=now, wall=now + THETA)
    return sent


def fresh(*, limit: int = LIMIT, window: float = WINDOW, reserve: int = 0) -> WindowModel:
    return WindowModel(limit=limit, window_seconds=window, reserve=reserve)


# -- admission ------------------------------------------------------------------------------------


def test_the_first_request_is_a_lone_probe_then_the_budget_it_reports() -> None:
    model = fresh()
    assert model.verdict(T0) is None and model.mode() == "probe"
    probe = model.grant(T0)
    assert model.verdict(T0 + 0.01) == math.inf  # nothing more until the probe's reply
    model.observe(probe, 200, headers(SERVER_AT_T0, 2), now=T0 + LATENCY, wall=SERVER_AT_T0)
    assert model.mode() == "quota"
    t = T0 + 1.0
    exchange(model, t, 200, remaining=1)
    model.grant(t + 1.0)  # the last one, still on the wire
    wake = model.verdict(t + 1.01)
    assert wake is not None and RESET_LOCAL <= wake <= RESET_LOCAL + FIRST_WAIT_SLACK


def test_a_spent_window_is_waited_out_to_its_reset_not_backed_off() -> None:
    model = fresh()
    exchange(model, T0, 429, remaining=0)
    wake = model.verdict(T0 + 1.0)
    assert wake is not None and RESET_LOCAL <= wake <= RESET_LOCAL + FIRST_WAIT_SLACK
    assert model.verdict(wake) is None  # the next window, entered at its top: no probe needed
    assert model.snapshot(T0 + 1.0, T0 + 1.0 + THETA).throttled == 1


def test_requests_on_the_wire_are_charged_until_their_replies_place_them() -> None:
    model = fresh()
    exchange(model, T0, 200, remaining=3)
    on_the_wire = [model.grant(T0 + 1.0 + i) for i in range(3)]
    assert model.verdict(T0 + 4.0) is not None  # three out, three left: the window is full
    model.unsent(on_the_wire[0])  # one never left: its charge is released at once
    assert model.verdict(T0 + 4.0) is None


def test_replies_without_headers_fall_back_to_the_sliding_log() -> None:
    model = fresh(limit=3)
    t = T0
    for _ in range(3):
        exchange(model, t, 200, headers(t + THETA, None))
        t += 1.0
    assert model.mode() == "fallback"
    wake = model.verdict(t)  # three ended in the last window: the first must age out
    assert wake == pytest.approx(T0 + LATENCY + WINDOW)
    assert model.verdict(wake + 1e-3) is None


# -- giving up on a server that refuses everything -----------------------------------------------


def test_refusals_in_three_windows_in_a_row_stall_with_the_servers_words() -> None:
    model = fresh()
    t = T0
    for window in range(STALL_WINDOWS):
        assert model.stalled is None, f"stalled after {window} windows"
        exchange(model, t, 429, remaining=0)
        wake = model.verdict(t + LATENCY)
        assert wake is not None and wake - t < WINDOW + 2  # waits for the next window ...
        t = wake  # ... and tries again at its top
    assert model.stalled is not None
    assert f"refused every request for {STALL_WINDOWS} windows" in model.stalled
    assert "429, X-RateLimit-Reset 15 min ahead" in model.stalled


def test_an_accepted_request_between_refusals_resets_the_count() -> None:
    model = fresh()
    t = T0
    for status in (429, 429, 200, 429, 429):
        exchange(model, t, status, remaining=0 if status == 429 else 10)
        t = model.verdict(t + LATENCY) or t + 1.0
    assert model.stalled is None


def test_headerless_refusals_stall_too() -> None:
    model = fresh()
    t = T0
    for _ in range(STALL_WINDOWS):
        assert model.stalled is None
        exchange(model, t, 429, {})
        wake = model.verdict(t + LATENCY)
        assert wake is not None and wake >= t + WINDOW  # a whole window without Retry-After
        t = wake
    assert model.stalled is not None and "429, no X-RateLimit headers" in model.stalled


def test_a_refusal_with_a_reset_hours_ahead_stalls_at_once() -> None:
    model = fresh()
    exchange(model, T0, 429, remaining=0, reset=SERVER_AT_T0 + 7200)
    assert model.stalled is not None
    assert "429, X-RateLimit-Reset 2 hours ahead" in model.stalled
    assert "more than 2 quota windows" in model.stalled


def test_a_far_reset_of_a_window_we_were_accepted_in_is_a_longer_window_not_a_stall() -> None:
    # configured 300 s against the server's 900: its Reset is 800 s (2.7 configured windows)
    # ahead, but replies we were accepted in named it: that window is just spent
    model = fresh(window=300.0)
    exchange(model, T0, 200, remaining=1, reset=RESET)
    exchange(model, T0 + 1.0, 429, remaining=0, reset=RESET)
    assert model.stalled is None
    wake = model.verdict(T0 + 2.0)
    assert wake is not None and RESET_LOCAL <= wake <= RESET_LOCAL + FIRST_WAIT_SLACK


# -- the last window, from one run to the next ----------------------------------------------------


def spent_window() -> LastWindow:
    """What a run that spent the window we start in leaves behind."""
    model = fresh()
    t = T0
    exchange(model, t, 200, remaining=5)
    for left in range(4, -1, -1):
        t += 1.0
        exchange(model, t, 200, remaining=left)
    last = model.last_window(t + 1.0, t + 1.0 + THETA)
    assert last is not None
    return last


def test_the_last_window_is_plain_data_that_round_trips() -> None:
    last = spent_window()
    assert (last.reset, last.window_seconds, last.limit, last.spent) == (RESET, WINDOW, LIMIT, 150)
    assert last.offset_lo <= 0.0 <= last.offset_hi  # the wall clock agrees with the server's
    assert last.offset_hi - last.offset_lo <= 1.0 + LATENCY + 1e-3  # a whole-second Date
    assert LastWindow.from_json(last.to_json()) == last


@pytest.mark.parametrize(
    "junk",
    [
        None,
        {},
        {"reset": "soon"},
        {**spent_window().to_json(), "limit": True},
        {**spent_window().to_json(), "window_seconds": -1},
        {**spent_window().to_json(), "offset_lo": 5.0, "offset_hi": 1.0},
    ],
)
def test_a_saved_value_that_is_not_ours_reads_as_nothing(junk: dict[str, object] | None) -> None:
    assert LastWindow.from_json(junk) is None


def test_a_new_run_in_a_window_an_earlier_one_spent_waits_for_its_reset_without_a_probe() -> None:
    last = spent_window()
    model = fresh()
    start = 50.0  # another process: another monotonic timeline, the same wall clock
    wall = RESET - 300.0
    model.recall(last, start, wall)
    wake = model.verdict(start)
    assert wake is not None
    assert start + 300.0 <= wake <= start + 300.0 + 1.0 + WAKE_MARGIN_SECONDS
    assert model.verdict(wake) is None
    waiting = model.snapshot(start, wall)  # what the progress line shows meanwhile
    assert (waiting.remaining, waiting.next_reset) == (0, wake)


@pytest.mark.parametrize(
    ("wall", "window", "reserve", "spent"),
    [
        (RESET + 5.0, WINDOW, 0, 150),  # that window has reset
        (RESET - 2 * WINDOW, WINDOW, 0, 150),  # more than a window ahead: a clock stepped
        (RESET - 300.0, 600.0, 0, 150),  # another window length
        (RESET - 300.0, WINDOW, 0, 120),  # not spent: the probe goes, as for any window
    ],
    ids=["reset", "too-far", "other-length", "not-spent"],
)
def test_a_saved_window_that_no_longer_fits_is_ignored(
    wall: float, window: float, reserve: int, spent: int
) -> None:
    last = LastWindow(RESET, WINDOW, LIMIT, spent, -0.5, 0.5)
    model = fresh(window=window, reserve=reserve)
    model.recall(last, 50.0, wall)
    assert model.verdict(50.0) is None


def test_the_reserve_counts_when_judging_a_saved_window_spent() -> None:
    model = fresh(reserve=30)
    model.recall(LastWindow(RESET, WINDOW, LIMIT, 120, -0.5, 0.5), 50.0, RESET - 300.0)
    assert model.verdict(50.0) is not None


# -- purity ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["model", "windows", "grid", "fallback", "stall", "memory"])
def test_the_model_imports_no_asyncio_and_no_aiolimiter(module: str) -> None:
    source = inspect.getsource(getattr(harvester.gate, module))
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "aiolimiter", "aiohttp"}, imported
