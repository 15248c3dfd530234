"""The simulator's knobs and the documented numbers they default to.

Why it exists: every other module reads its behaviour from one :class:`SimulatorSettings`, and
the defaults are the API document's own figures (quota, window, auth limit, credential lifetime),
so they live together where one can check them against ``shared/spec/voicetrends-api.md``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from harvester.simulator.shapes import Shape, check_shapes

LIMIT = 150  # requests per window, from the Diagnostic Flow page of the API document
WINDOW_SECONDS = 900.0  # 15 minutes, same source; documented resets are multiples of 900
AUTH_LIMIT = 15  # POST /auth per window, from the API reference's auth page
CREDENTIAL_TTL = 86_400.0  # temporary credentials expire 24 h after last use (auth page)
TOOLS = frozenset({"dev", "insight", "fuseplus"})  # the auth call's documented `tool` values
DEFAULT_PHONES = ("6175550101", "6175550103", "6175550108")  # 555-01xx: fictional numbers
DEFAULT_TEMP_LOGIN = "0123456789abcdef0123456789abcdef"  # the contract's example login
DEFAULT_TEMP_PASSWORD = "fedcba9876543210fedcba9876543210"  # its mirror image: obviously fake
BASE_PATH = "/api"  # as in https://voicetrends.plumvoice.com/api


@dataclass(slots=True)
class SimulatorSettings:
    """Every knob of the simulator. Read on every request, so tests may change any field live
    (``server.settings.today = ...``); only the constructor validates them.

    Activity shapes (``shapes``: phone -> :class:`~harvester.simulator.shapes.Shape`) close
    days of a number on top of the data model; ``non_additive`` and ``max_range_days`` break
    the range arithmetic request economy relies on (see their modules).

    Late data: a day ``d`` with ``0 < (today - d).days < settle_days`` reports only
    ``age/settle_days`` of its calls (a subset of its final counts, identities intact), so
    ``settle_days=3`` leaves yesterday at 1/3 and the day before at 2/3; ``0`` and ``1`` change
    nothing. Days ``>= today`` report no data. Fault rates are chances per counted data request
    (they must sum to at most 1); the n-th such request's fate and jitter come from an RNG seeded
    by ``(seed, n)``, so a run with the same requests meets the same faults.
    """

    phones: tuple[str, ...] = DEFAULT_PHONES  # the account's numbers; ALL merges them
    account_login: str = "demo@example.com"  # the account's own login, for POST /auth
    account_password: str = "demo-password"
    temp_login: str | None = DEFAULT_TEMP_LOGIN  # a preset temporary pair; None: /auth only
    temp_password: str | None = DEFAULT_TEMP_PASSWORD
    account_active: bool = True  # False: every data and auth call is a 401
    credential_ttl: float = CREDENTIAL_TTL  # seconds after its last use a temporary pair dies
    limit: int = LIMIT  # data requests per window, per account
    window_seconds: float = WINDOW_SECONDS  # whole seconds advised: Reset is rounded up
    auth_limit: int = AUTH_LIMIT  # POST /auth per window
    count_429: bool = True  # a refused request still spends quota (the spec: assume it may)
    other_client_spend: int = 0  # requests another tool of the account sends per window ...
    other_client_at: float | None = None  # ... at this offset into it (None: seeded moments)
    clock_skew: float = 0.0  # server clock = real clock + skew (seconds)
    quota_headers: bool = True  # False: no X-RateLimit-* on any reply (a proxy stripped them)
    reset_ahead: int = 0  # seconds added to every X-RateLimit-Reset (a refusal far ahead)
    seed: int = 0  # data, fault fates, jitter and issued credentials all follow from it
    today: dt.date | None = None  # the server's today; None: the server clock's UTC date
    settle_days: int = 0  # late data: see above
    latency: float = 0.0  # seconds before every data and auth reply (not 404s) ...
    jitter: float = 0.0  # ... plus uniform(0, jitter)
    error_rate: float = 0.0  # share of counted data requests answered 500
    drop_rate: float = 0.0  # ... whose connection is closed without any reply
    malformed_rate: float = 0.0  # ... answered 200 with a body that is not a valid reply
    truncate_rate: float = 0.0  # ... answered 200 with half the body Content-Length promises
    base_path: str = BASE_PATH
    # request economy (issue 14): activity shapes and range arithmetic, see shapes/nonadditive
    shapes: dict[str, Shape] = field(default_factory=dict)  # per phone; absent: today's
    non_additive: float = 0.0  # share of multi-day range replies off from the sum of their days
    max_range_days: int | None = None  # a longer range is a 400 "date range too long"

    def __post_init__(self) -> None:
        self.phones = tuple(self.phones)
        if not self.phones or not all(p.isdigit() for p in self.phones):
            raise ValueError("phones must be a non-empty list of digit strings")
        if self.limit < 1 or self.auth_limit < 1 or self.window_seconds <= 0:
            raise ValueError("limit, auth_limit and window_seconds must be positive")
        rates = (self.error_rate, self.drop_rate, self.malformed_rate, self.truncate_rate)
        if min(rates) < 0 or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        if self.settle_days < 0 or self.other_client_spend < 0 or self.latency < 0:
            raise ValueError("settle_days, other_client_spend and latency must be >= 0")
        self._check_economy_knobs()

    def _check_economy_knobs(self) -> None:
        check_shapes(self.shapes, self.phones)
        if not 0.0 <= self.non_additive <= 1.0:
            raise ValueError("non_additive must be a share between 0 and 1")
        if self.max_range_days is not None and self.max_range_days < 1:
            raise ValueError("max_range_days must be at least 1")
