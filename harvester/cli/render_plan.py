"""``harvester plan``'s output: a :class:`~harvester.forecast.PlanForecast` as text or as JSON
(``--json``, whose keys are part of the contract)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from harvester.forecast import PlanForecast
from harvester.logs import format_duration
from harvester.plan import Cost

# What a plan that outlasts the calendar says instead of a finish time.
_NEVER = f"finishing after the year {dt.MAXYEAR}"


def render_plan(forecast: PlanForecast, *, as_json: bool) -> str:
    """The forecast as text, or as JSON (``--json``)."""
    return plan_json(forecast) if as_json else plan_text(forecast)


def plan_data(f: PlanForecast) -> dict[str, Any]:
    """The forecast as the JSON object ``harvester plan --json`` prints."""
    plan, counts, cost, q, span = f.plan, f.counts, f.cost, f.quota, f.plan.span
    return {
        "command": plan.command,
        "phones": list(plan.phones),
        "start": span[0].isoformat() if span else None,
        "end": span[1].isoformat() if span else None,
        "window": plan.grain.value,
        "today": f.today.isoformat(),
        "jobs_total": counts.total,
        "jobs_done": counts.done,
        "jobs_failed": counts.failed,
        "jobs_to_fetch": counts.to_fetch,
        "refetch": counts.refetch,
        "retry": counts.retry,
        "requests": counts.to_fetch,
        "economy": f.economy,
        "requests_expected": cost.requests,
        "quota_limit": q.limit,
        "quota_reserve": q.reserve,
        "window_seconds": q.window_seconds,
        "quota_windows": cost.windows,
        "seconds": cost.seconds,
        "finish_at": f.finish_at.isoformat(timespec="seconds") if f.finish_at else None,
        "alternatives": [
            {"name": alt.name, "requests": alt.cost.requests, "seconds": alt.cost.seconds}
            for alt in f.alternatives
        ],
    }


def plan_json(f: PlanForecast) -> str:
    return json.dumps(plan_data(f), indent=2)


def plan_text(f: PlanForecast) -> str:
    plan, counts, cost, q, span = f.plan, f.counts, f.cost, f.quota, f.plan.span
    where = f"{span[0].isoformat()}..{span[1].isoformat()}" if span else "nothing to do"
    finish = f.finish_at
    lines = [
        f"plan: {plan.command} {where}, {len(plan.phones)} phone(s), {plan.grain.value} windows",
        f"  jobs:     {counts.total} total, {counts.done} done, {counts.failed} failed, "
        f"{counts.to_fetch} to fetch ({counts.refetch} re-fetch, {counts.retry} retry)",
        f"  requests: {_requests(f)} at {f.budget} per {format_duration(q.window_seconds)} "
        f"(limit {q.limit}, reserve {q.reserve}): {cost.windows} quota window(s), "
        f"{_how_long(cost)}, "
        + (f"finishing about {finish.strftime('%Y-%m-%d %H:%M %Z')}" if finish else _NEVER),
    ]
    if f.alternatives:
        lines.append("  alternatives (requests for the whole range on an empty store):")
        for alt in f.alternatives:
            lines.append(
                f"    {alt.name:<22} {alt.cost.requests:>8} requests, {_how_long(alt.cost)}"
            )
    return "\n".join(lines)


def _requests(f: PlanForecast) -> str:
    if not f.economy:
        return str(f.counts.to_fetch)
    return f"about {f.cost.requests} with request economy ({f.counts.to_fetch} day by day)"


def _how_long(cost: Cost) -> str:
    """Wall time at the quota; a plan that fits one window is paced by the network, not by it."""
    if cost.windows <= 1:
        return "within one quota window"
    return f"about {format_duration(cost.seconds)}"
