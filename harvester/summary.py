"""What a pull or sync did: the summary a run returns, and its run id.

Kept apart from the scheduler so that what renders a summary (the CLI, the progress display)
needs nothing of how a run is driven. ``exit_code`` follows the contract.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from typing import Literal

from harvester.clock import Clock
from harvester.jobs import Job


@dataclass
class RunSummary:
    """What a pull or sync did; ``exit_code`` follows the contract."""

    command: str
    run_id: str
    planned: int = 0
    already_done: int = 0
    to_fetch: int = 0
    done: int = 0
    failed: list[tuple[Job, str]] = field(default_factory=list)
    # jobs of the plan that failed in an earlier run and that this run did not retry
    failed_before: list[Job] = field(default_factory=list)
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    rows: int = 0
    quarantined: int = 0
    renewals: int = 0
    # jobs whose window the server's day has not passed yet: not recorded, left for a later run
    unfinished: int = 0
    elapsed_seconds: float = 0.0
    stopped: Literal["interrupted", "credentials", "unreachable", "quota"] | None = None
    message: str | None = None

    @property
    def exit_code(self) -> int:
        if self.stopped == "credentials":
            return 3
        if self.stopped == "interrupted":
            return 130
        if self.stopped in ("unreachable", "quota"):  # finished early; the rest is the next run's
            return 1
        return 1 if self.failed or self.failed_before else 0

    @property
    def pending(self) -> int:
        """Jobs of this run neither done nor failed (a stopped run leaves some, and so do
        windows the server's day has not passed)."""
        return max(0, self.to_fetch - self.done - len(self.failed))

    def to_json(self) -> str:
        """The machine-readable summary printed by ``--json``."""
        return json.dumps(
            {
                "command": self.command,
                "run_id": self.run_id,
                "exit_code": self.exit_code,
                "planned": self.planned,
                "already_done": self.already_done,
                "to_fetch": self.to_fetch,
                "done": self.done,
                "failed": [
                    {
                        "phone": j.phone,
                        "window_start": j.window_start.isoformat(),
                        "window_end": j.window_end.isoformat(),
                        "reason": reason,
                    }
                    for j, reason in self.failed
                ],
                "failed_before": [
                    {
                        "phone": j.phone,
                        "window_start": j.window_start.isoformat(),
                        "window_end": j.window_end.isoformat(),
                    }
                    for j in self.failed_before
                ],
                "pending": self.pending,
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "retries": self.retries,
                "rows": self.rows,
                "quarantined": self.quarantined,
                "renewals": self.renewals,
                "unfinished": self.unfinished,
                "elapsed_seconds": round(self.elapsed_seconds, 3),
                "stopped": self.stopped,
                "message": self.message,
            }
        )


def new_run_id(clock: Clock) -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    stamp = dt.datetime.fromtimestamp(clock.wall(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"
