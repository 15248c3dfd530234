"""The quota gate: when may the next request to VoiceTrends go out?

The quota decides how long every pull takes: 150 requests per fixed 15-minute window of the
*server's* clock, shared with the account's other tools. A request wasted on a 429, or a second
idle after the server's window has reset, is time the user waits. So the gate does not guess: it
keeps the server's own view of the window, fed by ``X-RateLimit-Limit/Remaining/Reset`` and ``Date``
from every reply, and sends exactly when that view says a request will be counted and accepted.

Usage (the scheduler's whole view of the gate)::

    gate = QuotaGate(limit=150, window_seconds=900, reserve=0, concurrency=4)
    gate.recall(last)                           # optional: the last window an earlier run saw
    async with gate.request() as permit:        # a concurrency slot, pacing and budget
        reply = await send()
        permit.observe(reply.status, reply.headers)
    # on a 429 the caller just asks again; the gate has already decided how long to wait
    last = gate.last_window()                   # for the next run (plain data, JSON-able)

``gate.request()`` raises :class:`~harvester.errors.QuotaStalled` when the server refuses
everything (:mod:`.stall`). The parts, one concept each:

- :mod:`.model`: the window model, pure (times and headers in, verdicts out; no asyncio);
- :mod:`.grid`: where windows end, learnt from the server's Resets (length and phase);
- :mod:`.fallback`: the sliding log used when replies carry no quota headers;
- :mod:`.stall`: when to stop waiting for a server that refuses everything;
- :mod:`.memory`: the last window, carried from one run to the next;
- :mod:`.waiter`: :class:`QuotaGate`, the async part (concurrency, aiolimiter pacing, sleeping);
- beside the package, :mod:`harvester.server_clock` keeps the server clock's offset and
  :mod:`harvester.api.headers` reads the headers.

How the budget is known
-----------------------
*The server's clock.* ``Date`` has one-second resolution, but every reply bounds the offset
``theta`` (server = local monotonic + theta): a reply sent at ``s``, received at ``r`` and dated
``D`` was generated in ``[D, D + 1)`` and in ``[s + theta, r + theta]``, so ``D - r <= theta <
D + 1 - s``. Intersecting these intervals over many replies pins ``theta`` to about one round trip.
A new window is entered at the earliest local time that is *surely* past the server's reset:
``reset - theta_lo`` (plus a small margin). No oversleeping, no early request.

*Out-of-order replies.* Per window (keyed by its reset), ``spent`` is the highest count any reply
reported and ``ref`` the send time of that reply's request. Our requests still unresolved count
against the window if they may land in it and were not sent clearly before ``ref`` (the server
counts in arrival order, so those are already in ``spent``). Requests sent near a boundary are
thus charged to both windows until a reply says where they landed. Without another client this
is exact: no 429, no idle.

*Unknown windows.* The first request of a run, and the first into a window we did not enter at
its top (after an idle gap), is a lone probe: another tool may have spent part of it. Windows we
wait for and enter at their top need no probe. A window an earlier run of this store spent is
known from its :class:`LastWindow` and waited out without a probe. Another client spending at any
moment shows up in the next reply; at most ``concurrency`` requests were already on their way.

*The window's length.* ``window_seconds`` is a first guess: the server's Resets are the
authority. A Reset that cannot end a window of that length (more than a window ahead of when the
request was counted, or off the grid) starts learning: the spacing of Resets of successive
windows is the server's length, and windows that end off the epoch's grid are followed where the
server says they end (logged once). Until then a 429 still stops everything until its Reset.

*Fallbacks.* A 429 means the window is spent: wait for the reset it names, never back off
exponentially. A ``Reset`` that is not a number, in the past, or further ahead than the window
allows is ignored (logged once) and the window found from ``Date`` (one more than a day ahead
teaches nothing either). With no quota headers at all (a proxy stripped them) the gate keeps a
sliding log: never more than ``limit - reserve`` requests that may land in any
``window_seconds``, whatever the alignment, and after a 429 a pause of the reply's
``Retry-After`` (seconds or an HTTP date; at most a window), or a whole window without one.
"""

from __future__ import annotations

from harvester.gate.memory import LastWindow
from harvester.gate.model import WAKE_MARGIN_SECONDS, GateSnapshot, Mode, WindowModel
from harvester.gate.stall import STALL_WINDOWS
from harvester.gate.waiter import PACING_WINDOW_FRACTION, Permit, QuotaGate

__all__ = [
    "PACING_WINDOW_FRACTION",
    "STALL_WINDOWS",
    "WAKE_MARGIN_SECONDS",
    "GateSnapshot",
    "LastWindow",
    "Mode",
    "Permit",
    "QuotaGate",
    "WindowModel",
]
