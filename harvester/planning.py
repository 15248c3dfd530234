"""``harvester plan``: what a pull or sync would send, what it costs, and cheaper alternatives.

Sends nothing and writes nothing: it reads the ledger (if the store exists) and counts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from harvester.config import Config
from harvester.jobs import Grain
from harvester.plan import Cost, JobIndex, Plan, count, count_jobs
from harvester.progress import format_duration
from harvester.store import open_index


def describe_plan(
    config: Config,
    build: Callable[[JobIndex], Plan],
    today: dt.date,
    *,
    as_json: bool,
    now: dt.datetime | None = None,
) -> str:
    """The plan as text or JSON (``--json``)."""
    index = open_index(config.store.path)
    plan = build(index)
    counts = count(plan, index)
    q = config.quota
    budget = q.limit - q.reserve
    cost = Cost.of(counts.to_fetch, budget, q.window_seconds)
    now = now or dt.datetime.now(dt.UTC).astimezone()
    finish = _finish_at(now, cost.seconds)
    span = plan.span
    alternatives = _alternatives(plan, budget, q.window_seconds)
    data: dict[str, Any] = {
        "command": plan.command,
        "phones": list(plan.phones),
        "start": span[0].isoformat() if span else None,
        "end": span[1].isoformat() if span else None,
        "window": plan.grain.value,
        "today": today.isoformat(),
        "jobs_total": counts.total,
        "jobs_done": counts.done,
        "jobs_failed": counts.failed,
        "jobs_to_fetch": counts.to_fetch,
        "refetch": counts.refetch,
        "retry": counts.retry,
        "requests": cost.requests,
        "quota_limit": q.limit,
        "quota_reserve": q.reserve,
        "window_seconds": q.window_seconds,
        "quota_windows": cost.windows,
        "seconds": cost.seconds,
        "finish_at": finish.isoformat(timespec="seconds") if finish else None,
        "alternatives": alternatives,
    }
    if as_json:
        return json.dumps(data, indent=2)
    where = f"{data['start']}..{data['end']}" if span else "nothing to do"
    lines = [
        f"plan: {plan.command} {where}, {len(plan.phones)} phone(s), {plan.grain.value} windows",
        f"  jobs:     {counts.total} total, {counts.done} done, {counts.failed} failed, "
        f"{counts.to_fetch} to fetch ({counts.refetch} re-fetch, {counts.retry} retry)",
        f"  requests: {cost.requests} at {budget} per {format_duration(q.window_seconds)} "
        f"(limit {q.limit}, reserve {q.reserve}): {cost.windows} quota window(s), "
        f"{_how_long(cost)}, "
        + (f"finishing about {finish.strftime('%Y-%m-%d %H:%M %Z')}" if finish else _NEVER),
    ]
    if alternatives:
        lines.append("  alternatives (requests for the whole range on an empty store):")
        for alt in alternatives:
            lines.append(
                f"    {alt['name']:<22} {alt['requests']:>8} requests, "
                f"{_how_long(Cost.of(alt['requests'], budget, q.window_seconds))}"
            )
    return "\n".join(lines)


# A plan at one request a day over centuries of dates for many phones outlasts the calendar.
_NEVER = f"finishing after the year {dt.MAXYEAR}"


def _finish_at(now: dt.datetime, seconds: float) -> dt.datetime | None:
    """When a plan of ``seconds`` started ``now`` ends, or None past the calendar's end."""
    try:
        return now + dt.timedelta(seconds=seconds)
    except OverflowError:
        return None


def _how_long(cost: Cost) -> str:
    """Wall time at the quota; a plan that fits one window is paced by the network, not by it."""
    if cost.windows <= 1:
        return "within one quota window"
    return f"about {format_duration(cost.seconds)}"


def _alternatives(plan: Plan, budget: int, window_seconds: float) -> list[dict[str, Any]]:
    """Cost of the same range with coarser windows or with the merged ALL number only."""
    out = []
    options: list[tuple[str, Plan]] = []
    for grain in Grain:
        if grain is not plan.grain:
            options.append((f"{grain.value} windows", dataclasses.replace(plan, grain=grain)))
    if plan.phones != ("ALL",):
        all_only = tuple(
            dataclasses.replace(plan.ranges[0], phone="ALL") for _ in range(1) if plan.ranges
        )
        options.append(
            (f"ALL only ({plan.grain.value})", dataclasses.replace(plan, ranges=all_only))
        )
    for name, alt in options:
        requests = count_jobs(alt)
        cost = Cost.of(requests, budget, window_seconds)
        out.append({"name": name, "requests": requests, "seconds": cost.seconds})
    return out
