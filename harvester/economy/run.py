"""What a run's phones share: the policy, the server's range limits, the verification sample,
whether derivation is still trusted, and the events for the caller.

Why it exists: the safety rules of issue 14 are per run and per store, not per phone: the
*first* derivation of a run is verified, then at least one in ``verify_every``; one mismatch on
any phone turns derivation off for all of them. Each phone's planner reports here and reads the
verdict from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harvester.economy.model import EconomyPolicy, Event, Mismatch, RangeLimits


@dataclass(slots=True)
class RunState:
    policy: EconomyPolicy
    limits: RangeLimits
    derive: bool = True
    derived_leaves: int = 0  # derivations that resolved days, in this run
    events: list[Event] = field(default_factory=list)
    switch_pending: bool = False  # derivation just failed: every phone must re-plan

    def __post_init__(self) -> None:
        self.derive = self.policy.derive

    def cap(self) -> int:
        """The longest range to propose now."""
        return self.limits.cap(self.policy.max_range_days)

    def sample(self) -> bool:
        """Count one derivation; whether it is to be checked by a direct fetch (1st, 21st...)."""
        self.derived_leaves += 1
        return (self.derived_leaves - 1) % self.policy.verify_every == 0

    def mismatch(self, event: Mismatch) -> None:
        """Additivity failed: derive nothing more, and have every phone re-plan (once)."""
        self.events.append(event)
        if self.derive:
            self.derive = False
            self.switch_pending = True
