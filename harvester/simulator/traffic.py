"""The data model: how many calls each phone gets on each day, and where in its graphs they end.

Why it exists: ground truth must be exact, realistic and the same in every process, without
storing anything. Each phone routes its calls into one or two of the applications of
:mod:`harvester.simulator.flows`. A day's calls are walked through the application's graph in
aggregate: at each item the arrivals are split multinomially, so no call is ever simulated one by
one. The entry menu never re-prompts, so its visits equal the calls, as in the seed's example.
Transfer items end every call that reaches them (``disconnect = visits``, ``filled = transfer`` =
the transfers that connected) and terminal goodbye items likewise with ``filled = visits,
transfer = 0``. Hence per application ``calls = sum(disconnect) = visits of the entry item``.
Items with no visits and applications with no calls are left out of a reply.

Empty answers (``{"applications": {}}``) are real too: every line is closed on Jan 1 and Dec 25,
about 3% of (phone, day) have no traffic, some phones are closed at weekends, and a day only has
data once it is over (``today`` and later are empty). Late data: with ``settle_days`` = S, a day
``age`` days old (0 < age < S) reports ``age/S`` of its calls, a subset of its final counts.
Counts are a pure function of ``(seed, phone, day, settled share)``, cached, so any process that
asks gets the same numbers, and a range reply is exactly the item-wise sum of its days (``ALL``:
of the account's phones).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from harvester.simulator.flows import APPLICATIONS, TERMINAL, TRANSFER, Application
from harvester.simulator.sampling import (
    Rand,
    binomial,
    conditional,
    multinomial,
    normal,
    seeded_rng,
    subsample,
)

COUNT_FIELDS = ("visits", "filled", "nomatch", "noinput", "transfer", "disconnect")
Counts = tuple[int, int, int, int, int, int]  # in COUNT_FIELDS order
DayCounts = tuple[tuple[int, tuple[tuple[int, Counts], ...]], ...]  # (app, ((item, counts), ...))
Key = tuple[int, int]  # (application index, item index)
TruthRow = tuple[str, str, str, str, int, int, int, int, int, int]

# These shape realistic numbers; none is documented by Plum.
_DAY_CACHE_SIZE = 65_536  # (phone, day) generations kept; ~1 KB each, so <~64 MB at worst
_VOLUME_RANGE = (30, 250)  # mean calls per phone per weekday: "tens to a few hundred"
_VOLUME_SPREAD = 0.2  # day-to-day relative standard deviation of a phone's calls
_WEEKDAY_FACTOR = (1.0, 1.05, 1.0, 0.95, 0.9, 0.45, 0.3)  # Mon..Sun: quieter weekends
_OUTAGE_RATE = 0.03  # share of (phone, day) with no traffic at all (line down, number parked)
_WEEKDAYS_ONLY_RATE = 1 / 3  # share of phones closed at weekends (no traffic Sat/Sun)
_AFTERHOURS_RATE = 0.6  # share of phones that also route to the small after-hours application
_AFTERHOURS_SHARE = 0.05  # its share of such a phone's calls: a few a day, some days none
_HOLIDAYS = ((1, 1), (12, 25))  # (month, day) every line is closed: known empty days for tests


@dataclass(frozen=True, slots=True)
class _Profile:
    volume: float  # mean calls on a weekday
    weekdays_only: bool
    apps: tuple[int, ...]  # application indices ...
    shares: tuple[float, ...]  # ... and their `conditional` shares of the calls


@functools.lru_cache(maxsize=1024)
def _profile(seed: int, phone: str) -> _Profile:
    """What a phone number is for: its traffic level and the applications it routes to."""
    rng = seeded_rng(seed, "profile", phone)
    volume = rng.uniform(*_VOLUME_RANGE)
    weekdays_only = rng.random() < _WEEKDAYS_ONLY_RATE
    primary = rng.randrange(2)  # the support line or the appointments line
    apps: tuple[int, ...] = (primary,)
    shares: tuple[float, ...] = (1.0,)
    if rng.random() < _AFTERHOURS_RATE:
        apps, shares = (primary, 2), conditional((1 - _AFTERHOURS_SHARE, _AFTERHOURS_SHARE))
    return _Profile(volume, weekdays_only, apps, shares)


def _walk(app: Application, calls: int, kept: int, rnd: Rand, keep_rnd: Rand) -> list[Counts]:
    """Walk ``calls`` calls through ``app`` in aggregate; return each item's counts of ``kept``.

    Full flows are split with ``rnd`` alone, so the final day never depends on how much of it has
    settled; the kept (settled) share of every split is subsampled from it with ``keep_rnd``.
    """
    thin = kept < calls
    arrivals, kept_arrivals = [0] * len(app.items), [0] * len(app.items)
    arrivals[0], kept_arrivals[0] = calls, kept
    out: list[Counts] = []
    for i, it in enumerate(app.items):
        a, k = arrivals[i], kept_arrivals[i]
        if a == 0:
            out.append((0, 0, 0, 0, 0, 0))
        elif it.kind == TRANSFER:
            connected = binomial(rnd, a, it.connect)
            kc = subsample(keep_rnd, k, (connected, a - connected))[0] if thin else connected
            out.append((k, kc, 0, 0, kc, k))
        elif it.kind == TERMINAL:
            out.append((k, k, 0, 0, 0, k))
        else:
            visits = filled = nomatch = noinput = disconnect = 0  # of the kept calls
            pending, kept_pending, all_filled = a, k, 0
            for _ in range(it.attempts):  # each round: one visit per pending caller
                if pending == 0:
                    break
                split = multinomial(rnd, pending, it.outcomes)
                mine = subsample(keep_rnd, kept_pending, split) if thin else split
                visits += kept_pending
                filled += mine[0]
                nomatch += mine[1]
                noinput += mine[2]
                disconnect += mine[3]
                all_filled += split[0]
                pending, kept_pending = split[1] + split[2], mine[1] + mine[2]
            arrivals[it.fallback] += pending  # out of attempts: the operator or goodbye
            kept_arrivals[it.fallback] += kept_pending
            routed = multinomial(rnd, all_filled, it.routes)
            kept_routed = subsample(keep_rnd, filled, routed) if thin else routed
            for target, x, kx in zip(it.targets, routed, kept_routed, strict=True):
                arrivals[target] += x
                kept_arrivals[target] += kx
            out.append((visits, filled, nomatch, noinput, 0, disconnect))
    return out


@functools.lru_cache(maxsize=_DAY_CACHE_SIZE)
def day_counts(
    seed: int, phone: str, ordinal: int, settled: int, parts: int, *, always_open: bool = False
) -> DayCounts:
    """One phone's data for one day with ``settled/parts`` of its calls processed.

    Pure and cached: the same arguments always give the same counts, in any process.
    ``always_open`` (a busy number's shape): no holiday, outage or weekend closure, at least one
    call; the draws are the same, so an open day's counts do not depend on it.
    """
    day = dt.date.fromordinal(ordinal)
    if (day.month, day.day) in _HOLIDAYS and not always_open:
        return ()
    profile = _profile(seed, phone)
    rng = seeded_rng(seed, "day", phone, ordinal)
    rnd = rng.random
    outage = rnd() < _OUTAGE_RATE  # drawn even when always open, so later draws stay the same
    if not always_open and (outage or (profile.weekdays_only and day.weekday() >= 5)):
        return ()
    mean = profile.volume * _WEEKDAY_FACTOR[day.weekday()]
    calls = max(int(always_open), round(mean * (1.0 + _VOLUME_SPREAD * normal(rnd))))
    kept = calls * settled // parts
    keep_rnd = seeded_rng(seed, "late", phone, ordinal, settled, parts).random
    per_app = multinomial(rnd, calls, profile.shares)
    kept_per_app = subsample(keep_rnd, kept, per_app)
    result = []
    for app_index, n, k in zip(profile.apps, per_app, kept_per_app, strict=True):
        if n == 0:
            continue
        counts = _walk(APPLICATIONS[app_index], n, k, rnd, keep_rnd)  # walked even if k == 0,
        if k:  # so that the next application's full counts do not depend on k
            result.append((app_index, tuple((j, c) for j, c in enumerate(counts) if c[0])))
    return tuple(sorted(result))


def add_counts(a: Counts, b: Counts) -> Counts:
    """Two items' counts summed field by field (a range's reply sums its days and phones)."""
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5])
