"""The window model: what the server's quota allows, from what its replies said. No I/O, no
asyncio: every method takes the times it needs (local monotonic ``now``, wall-clock ``wall``), so
it is tested with plain calls. :class:`~harvester.gate.waiter.QuotaGate` puts it on the wire.

Verbs: :meth:`WindowModel.verdict` (may a request go at ``now``, else when to look again),
:meth:`~WindowModel.grant` (one goes), :meth:`~WindowModel.observe` (its reply said this),
:meth:`~WindowModel.unsent` / :meth:`~WindowModel.abandon` (it never left / no reply came),
:meth:`~WindowModel.snapshot`, and :meth:`~WindowModel.last_window` / :meth:`~WindowModel.recall`
to carry the last window over to the next run. How the budget is known is the package's docstring.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from harvester.api.headers import (
    DATE_RESOLUTION_SECONDS,
    LIMIT_HEADER,
    REMAINING_HEADER,
    RESET_HEADER,
    header_date,
    header_int,
    header_text,
    retry_after,
)
from harvester.gate.fallback import SlidingLog
from harvester.gate.grid import RESET_LEARN_MAX_AHEAD_SECONDS, WindowGrid, parse_reset
from harvester.gate.memory import LastWindow
from harvester.gate.notes import OnceLog, log
from harvester.gate.stall import RefusalWatch, describe
from harvester.gate.windows import Sent, Window, WindowBooks
from harvester.server_clock import OffsetEstimate

# Sent this long after the local time at which the server's reset has surely passed: absorbs float
# rounding and clock drift beyond server_clock.CLOCK_DRIFT_RATE; one reply's latency is far larger.
WAKE_MARGIN_SECONDS = 0.1
# Entering a window within this fraction of its start (45 s of 900 s) is "at its top": it cannot
# have been spent by a previous run of ours, so no probe is needed. Later arrivals probe first.
AT_TOP_WINDOW_FRACTION = 0.05
# After this many replies in a row without quota headers, stop trusting the window model and use
# the sliding log. One proxy error page (a 502 without headers) must not stall a healthy run.
HEADERLESS_STREAK_FOR_FALLBACK = 3
# A request abandoned without a reply (timeout, dropped connection) may still be queued on the way
# to the server; it stays charged for this long after we gave up on it.
ABANDONED_GRACE_SECONDS = 30.0
# Warn when the local wall clock differs from the server's by more than this: NTP keeps hosts
# within milliseconds, so seconds mean an unsynchronised clock (harmless here, wrong elsewhere).
CLOCK_WARN_SECONDS = 2.0

Mode = Literal["probe", "quota", "fallback"]


@dataclass(frozen=True, slots=True)
class GateSnapshot:
    """The gate's numbers at one moment, for progress lines and the ETA (cheap to take)."""

    now: float  #: local monotonic time of the snapshot
    mode: Mode  #: ``probe`` (nothing known yet), ``quota`` (server headers) or ``fallback``
    sent: int  #: permits granted (requests sent or about to be)
    replies: int  #: replies observed, of any status
    throttled: int  #: 429 replies observed
    in_flight: int  #: permits not yet answered
    remaining: int  #: requests the current window still allows us, as estimated now
    next_reset: float  #: local monotonic time at which the next window surely has begun
    reset_in: float  #: ``next_reset - now``
    budget_per_window: int  #: requests per window left to us after reserve and other tools
    clock_offset: float | None  #: server clock minus local wall clock, seconds (None: unknown)
    clock_offset_error: float | None  #: half-width of the interval known to hold the offset


class WindowModel:
    """The server's fixed-window quota as its replies describe it (see the package docstring).

    :param limit: requests per window (the server's ``X-RateLimit-Limit`` overrides it).
    :param window_seconds: the window's length; windows are aligned to multiples of it.
    :param reserve: requests per window left unused for the account's other tools.
    """

    def __init__(self, *, limit: int, window_seconds: float, reserve: int = 0) -> None:
        if not 0 <= reserve < limit:
            raise ValueError(f"need limit > reserve >= 0, got limit={limit}, reserve={reserve}")
        if not window_seconds > 0 or not math.isfinite(window_seconds):
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.limit = limit  # for windows we have no reply from; the server's value once known
        self._reserve = reserve
        self._once = OnceLog()
        self._grid = WindowGrid(window_seconds, self._once)
        self._offset = OffsetEstimate()
        self._books = WindowBooks()
        self._log = SlidingLog()  # when requests ended, for the header-less fallback
        self._blocked_until = -math.inf  # after a 429, or a window an earlier run spent
        self._informed = False  # some reply placed a Remaining in a window
        self._headerless_streak = 0
        self._refusals = RefusalWatch()
        self.sent = self.replies = self.throttled = 0

    @property
    def window_seconds(self) -> float:
        """The window length in use: the configured one until the server's Resets teach another."""
        return self._grid.length

    @property
    def stalled(self) -> str | None:
        """Why waiting is pointless (the server refuses everything), or None."""
        return self._refusals.stalled

    # -- admission ------------------------------------------------------------------------------

    def verdict(self, now: float) -> float | None:
        """None if a request may go at ``now``, else the local time worth checking again
        (``inf``: only when a reply comes or a request ends)."""
        if now < self._blocked_until:
            return self._blocked_until
        self._log.forget(now, self._grid.length)
        mode = self.mode()
        if mode == "probe":
            return None if self._in_flight() == 0 else math.inf
        if mode == "fallback":
            budget = self._budget(self.limit)
            return self._log.verdict(now, self._grid.length, self._in_flight(), budget)
        bounds = self._offset.bounds(now)
        assert bounds is not None  # quota mode: a reply was placed, which needs the offset
        lo, hi = bounds
        self._forget(now, lo, hi)
        if self._in_flight() >= self._budget(self.limit):  # only for limits below concurrency
            return math.inf
        for n in self._view(now, lo, hi):
            window = self._books.windows.get(n)
            probed = window is not None and (window.replies > 0 or window.at_top)
            end = self._grid.end(n)
            if not probed and not self._at_top(n, now, hi) and self._books.in_flight_into(end, lo):
                return self._grid.end(n) - lo + WAKE_MARGIN_SECONDS  # the probe is still out
            if self._available(n, lo, hi) < 1:
                return self._grid.end(n) - lo + WAKE_MARGIN_SECONDS
        return None

    def grant(self, now: float) -> Sent:
        """A request goes at ``now`` (after :meth:`verdict` said it may)."""
        sent = self._books.grant(now)
        self.sent += 1
        bounds = self._offset.bounds(now)
        if self.mode() == "quota" and bounds is not None:
            for n in self._view(now, *bounds):
                window = self._books.windows.setdefault(n, Window(self.limit))
                if window.replies == 0 and self._at_top(n, now, bounds[1]):
                    window.at_top = True
        return sent

    def unsent(self, sent: Sent) -> None:
        """The request never left (no connection could be made): release its charge at once."""
        self._books.release(sent)
        self.sent -= 1

    def abandon(self, sent: Sent, now: float) -> None:
        """No reply will come: the request may still be on its way, so it stays charged a while."""
        sent.done_at = now + ABANDONED_GRACE_SECONDS
        self._log.add(sent.done_at)

    # -- what the replies say -------------------------------------------------------------------

    def observe(
        self, sent: Sent, status: int, headers: Mapping[str, str], *, now: float, wall: float
    ) -> None:
        """The reply to ``sent`` arrived at ``now`` (``wall`` on the wall clock)."""
        self.replies += 1
        self.throttled += status == 429
        sent.done_at = now
        self._log.add(now)
        limit = header_int(headers, LIMIT_HEADER)
        remaining = header_int(headers, REMAINING_HEADER)
        date = header_date(headers)
        if limit is not None and limit >= 1 and limit != self.limit:
            self._set_limit(limit)
        if date is not None:
            self._learn_offset(date - now, date + DATE_RESOLUTION_SECONDS - sent.sent_at, now, wall)
        reset_text = header_text(headers, RESET_HEADER)
        n, from_reset = self._locate(sent, now, wall, date, reset_text)
        if status == 429:  # whatever the model says, the window it names is spent until then
            self._wait_for_named_reset(reset_text, now)
        if n is not None and from_reset and date is None:
            # No Date: the reset still bounds the clock, since the request landed in its window.
            end = self._grid.end(n)
            self._learn_offset(end - self._grid.length - now, end - sent.sent_at, now, wall)
        pause = None
        if n is not None and (remaining is not None or (status == 429 and from_reset)):
            window_limit = self._window_limit(n) if limit is None or limit < 1 else limit
            spent = window_limit - remaining if remaining is not None else window_limit
            if status == 429:  # a refusal means the window is spent, whatever else it says
                spent = max(spent, window_limit)
            self._books.report(n, window_limit, spent, sent, self._grid.length)
            self._informed = True
            self._headerless_streak = 0
        else:
            self._headerless_streak += 1
            if self.mode() == "fallback":
                self._once(
                    "headerless",
                    "replies carry no X-RateLimit headers: at most %d requests per rolling %g s",
                    self._budget(self.limit),
                    self._grid.length,
                )
            if status == 429:  # no window named: the one that refused surely ends within a window
                pause = retry_after(headers, date if date is not None else wall)
                wait = self._grid.length if pause is None else min(pause, self._grid.length)
                self._blocked_until = max(self._blocked_until, now + wait + WAKE_MARGIN_SECONDS)
        if status != 429:
            self._refusals.accepted(parse_reset(reset_text))
        else:
            headed = remaining is not None or reset_text is not None
            self._refused(n, reset_text, headed, headers, pause, now=now, wall=wall, date=date)

    def _refused(
        self,
        n: int | None,
        reset_text: str | None,
        headed: bool,
        headers: Mapping[str, str],
        pause: float | None,
        *,
        now: float,
        wall: float,
        date: int | None,
    ) -> None:
        """Count a 429 towards giving up (:mod:`.stall`), worded as the server answered:
        ``n`` is the window it refused (None: unknown), ``headed`` whether it had quota headers,
        ``pause`` the Retry-After it was waited for, if any."""
        reset = parse_reset(reset_text)
        server_now = self._server_now(now, wall, date)
        ahead: float | None = reset - server_now if math.isfinite(reset) else None
        if ahead is not None and not 0 < ahead <= RESET_LEARN_MAX_AHEAD_SECONDS:
            ahead = None  # nonsense (milliseconds, the past): not a time to report or judge by
        answer = describe(
            429,
            reset_text=reset_text,
            reset_ahead=ahead,
            retry_after=pause if pause is not None else retry_after(headers, server_now),
            quota_headers=headed,
        )
        if ahead is not None and self._grid.too_far(reset, server_now):
            self._refusals.refused_far_ahead(reset, answer)
        key = ("window", n) if n is not None else ("time", math.floor(now / self._grid.length))
        self._refusals.refused(key, answer)

    def _wait_for_named_reset(self, reset_text: str | None, now: float) -> None:
        """After a 429, send nothing until the Reset it names (the server's own word, a day
        ahead at most), even where that Reset did not fit the window model: while the model's
        window is shorter than the server's, the model alone would send into a spent window."""
        bounds = self._offset.bounds(now)
        reset = parse_reset(reset_text)
        if bounds is None or not math.isfinite(reset):
            return
        until = reset - bounds[0] + WAKE_MARGIN_SECONDS
        if now < until <= now + RESET_LEARN_MAX_AHEAD_SECONDS:
            self._blocked_until = max(self._blocked_until, until)

    def _locate(
        self, sent: Sent, now: float, wall: float, date: int | None, reset_text: str | None
    ) -> tuple[int | None, bool]:
        """The window the request was counted in, and whether the reply's Reset named it."""
        bounds = self._offset.bounds(now)
        if bounds is not None:  # server time of the counting: after our send, before the reply
            first, last = sent.sent_at + bounds[0], now + bounds[1]
            if date is not None:  # ... and before the reply was dated
                last = min(last, date + DATE_RESOLUTION_SECONDS)
        else:  # only our wall clock, which may be off by anything: judge Reset loosely
            first, last = wall - (now - sent.sent_at) - self._grid.length, wall
        if reset_text is not None:
            n, moved = self._grid.adopt(reset_text, first, last)
            if moved:
                self._books.windows.clear()  # keyed by window number on the old grid
            if n is not None:
                return n, True
        if bounds is None:
            return None, False
        n = self._grid.index_at(first)
        same = n == self._grid.index_at(math.nextafter(last, -math.inf))
        return (n, False) if same else (None, False)

    def _learn_offset(self, lo: float, hi: float, now: float, wall: float) -> None:
        first = self._offset.bounds(now) is None
        if not self._offset.add(lo, hi, now):
            log.info("the server's clock stepped; re-learning its offset")
        if first:  # the local wall clock is never used for waits, but a wrong one misleads users
            ahead = (wall - now) - (lo + hi) / 2
            if abs(ahead) > CLOCK_WARN_SECONDS + (hi - lo) / 2:
                self._once(
                    "clock",
                    "the local clock is about %.0f s %s the server's; waits follow the server",
                    abs(ahead),
                    "ahead of" if ahead > 0 else "behind",
                )

    def _set_limit(self, limit: int) -> None:
        """The server's X-RateLimit-Limit is the authority."""
        self.limit = limit
        if self._reserve >= limit:
            self._once(
                "reserve",
                "reserve %d >= the server's limit %d; reserving %d",
                self._reserve,
                limit,
                limit - 1,
                level=logging.WARNING,
            )

    def _server_now(self, now: float, wall: float, date: int | None) -> float:
        """Our best guess of the server's clock: the offset's middle, else Date, else ours."""
        bounds = self._offset.bounds(now)
        if bounds is not None:
            return now + (bounds[0] + bounds[1]) / 2
        return float(date) if date is not None else wall

    # -- across runs ----------------------------------------------------------------------------

    def last_window(self, now: float, wall: float) -> LastWindow | None:
        """The newest window a reply told us about, for the next run (None: none, or no offset)."""
        bounds = self._offset.bounds(now)
        told = [n for n, w in self._books.windows.items() if w.replies]
        if bounds is None or not told or self.mode() != "quota":
            return None
        n = max(told)
        limit = self._window_limit(n)
        to_wall = wall - now  # server - wall = theta - (wall - monotonic)
        return LastWindow(
            reset=self._grid.end(n),
            window_seconds=self._grid.length,
            limit=limit,
            spent=self._books.charged(n, *bounds, self._grid),
            offset_lo=bounds[0] - to_wall,
            offset_hi=bounds[1] - to_wall,
        )

    def recall(self, last: LastWindow, now: float, wall: float) -> None:
        """Start from what an earlier run saw: if it spent the window we start in, send nothing
        until that window has surely reset. Values that no longer fit are ignored (logged)."""
        if abs(last.window_seconds - self._grid.length) > self._grid.tolerance():
            log.debug("ignoring the saved quota window: %g s long, not %g s", last.window_seconds,
                      self._grid.length)  # fmt: skip
            return
        wait = last.resets_in(wall)
        if wait is None or last.spent < self._budget(last.limit):
            return
        log.info("an earlier run spent this quota window: waiting %.0f s for its reset", wait)
        self._blocked_until = max(self._blocked_until, now + wait + WAKE_MARGIN_SECONDS)

    # -- the window model -----------------------------------------------------------------------

    def mode(self) -> Mode:
        if self._headerless_streak >= HEADERLESS_STREAK_FOR_FALLBACK or (
            not self._informed and self._headerless_streak > 0
        ):
            return "fallback"
        return "quota" if self._informed else "probe"

    def _available(self, n: int, lo: float, hi: float) -> int:
        """Requests window ``n`` still takes: its limit minus reserve, reported and unplaced."""
        return self._budget(self._window_limit(n)) - self._books.charged(n, lo, hi, self._grid)

    def _window_limit(self, n: int) -> int:
        window = self._books.windows.get(n)
        return window.limit if window is not None else self.limit

    def _view(self, now: float, lo: float, hi: float) -> range:
        """The windows a request sent now may be counted in, as far as the offset is known."""
        return range(self._grid.index_at(now + lo), self._grid.index_at(now + hi) + 1)

    def _at_top(self, n: int, now: float, hi: float) -> bool:
        return now + hi < self._grid.end(n) - self._grid.length * (1 - AT_TOP_WINDOW_FRACTION)

    def _budget(self, limit: int) -> int:
        return limit - min(self._reserve, limit - 1)

    def _in_flight(self) -> int:
        return self._books.in_flight()

    def _foreign_per_window(self, now: float) -> int:
        """Other tools' spending: the most seen in the current or the last finished window."""
        bounds = self._offset.bounds(now)
        if bounds is None:
            return 0
        current = self._grid.index_at(now + bounds[0])
        return self._books.foreign((current - 1, current))

    def _forget(self, now: float, lo: float, hi: float) -> None:
        """Drop windows and placed requests that can no longer matter."""
        current = self._grid.index_at(now + lo)
        self._books.forget(current, self._grid.end(current) - self._grid.length, hi)

    # -- for progress lines ---------------------------------------------------------------------

    def snapshot(self, now: float, wall: float) -> GateSnapshot:
        """The current estimates; cheap enough to call on every progress tick."""
        bounds = self._offset.bounds(now)
        theta = bounds if bounds is not None else (wall - now,) * 2
        mode = self.mode()
        limit = self.limit
        if mode == "quota" and bounds is not None:
            remaining = min(self._available(n, *bounds) for n in self._view(now, *bounds))
        elif mode == "fallback":
            recent = self._log.recent(now, self._grid.length)
            remaining = self._budget(limit) - self._in_flight() - recent
        else:
            remaining = self._budget(limit) - self._in_flight()
        next_end = self._grid.end(self._grid.index_at(now + theta[0]))
        next_reset = next_end - theta[0] + WAKE_MARGIN_SECONDS
        if now < self._blocked_until:  # a 429, or a window an earlier run spent: nothing till then
            remaining, next_reset = 0, self._blocked_until
        offset = error = None
        if bounds is not None:
            offset = (bounds[0] + bounds[1]) / 2 - (wall - now)
            error = (bounds[1] - bounds[0]) / 2
        return GateSnapshot(
            now=now,
            mode=mode,
            sent=self.sent,
            replies=self.replies,
            throttled=self.throttled,
            in_flight=self._in_flight(),
            remaining=max(0, remaining),
            next_reset=next_reset,
            reset_in=max(0.0, next_reset - now),
            budget_per_window=max(1, self._budget(limit) - self._foreign_per_window(now)),
            clock_offset=offset,
            clock_offset_error=error,
        )
