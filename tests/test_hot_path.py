"""What a pull does once per reply stays cheap, and means what it meant.

Two things every reply goes through: the quota gate's sliding log (one entry per reply, kept for
a window: with the quota lifted, hundreds of thousands at once) and the reading of its ``Date``
(parsed by the API client and again by the gate; it changes once a second).
"""

from __future__ import annotations

import random
import tracemalloc
from email.utils import formatdate

from harvester.api import headers as headers_module
from harvester.api.headers import header_date
from harvester.gate.fallback import SlidingLog


def test_the_sliding_log_takes_eight_bytes_a_reply() -> None:
    log = SlidingLog()
    log.add(0.0)
    tracemalloc.start()
    try:
        for i in range(100_000):
            log.add(i * 0.001)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used < 1_000_000  # a list of floats took 3.2 MB


def test_the_sliding_log_answers_as_a_sorted_list_would() -> None:
    rng = random.Random(3)
    log, reference = SlidingLog(), []
    for _ in range(2000):
        at = rng.uniform(0, 100)
        log.add(at)
        reference.append(at)
        now, window = rng.uniform(50, 150), rng.uniform(1, 60)
        reference = sorted(t for t in reference if t > now - window)
        log.forget(now, window)
        assert log.recent(now, window) == sum(1 for t in reference if t > now - window)
        in_flight, budget = rng.randint(0, 4), rng.randint(1, 40)
        recent = len(reference)  # every entry left is within the window
        excess = in_flight + recent + 1 - budget
        if excess <= 0:
            expected = None
        elif in_flight + 1 > budget:
            expected = float("inf")
        else:
            expected = reference[excess - 1] + window  # the log holds only recent ones now
        assert log.verdict(now, window, in_flight, budget) == expected


def test_a_date_is_parsed_once_however_many_replies_carry_it() -> None:
    headers_module._http_date.cache_clear()
    stamp = formatdate(1_700_000_000, usegmt=True)
    for _ in range(100):
        assert header_date({"Date": stamp}) == 1_700_000_000
    assert headers_module._http_date.cache_info().misses == 1
    # unreadable and missing dates are still None, never an exception
    assert header_date({"Date": "yesterday"}) is None
    assert header_date({"Date": ""}) is None
    assert header_date({}) is None
    assert header_date({"date": stamp}) == 1_700_000_000  # names match case-insensitively
