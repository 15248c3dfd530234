"""Deterministic randomness: seeded RNGs and the few distributions the data model draws from.

Why it exists: the simulator's data must be a pure function of its seed in *any* process (a test
may compare a subprocess's ground truth with a server's replies), so every draw here comes from a
``random.Random`` seeded by a stable hash and from ``random()`` alone, never from methods whose
algorithm may change between Python versions. Counts are split in aggregate (binomial,
multinomial, hypergeometric), so no call is ever simulated one by one.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable, Sequence

Rand = Callable[[], float]

_INVERSION_MAX_MEAN = 8.0  # binomial: exact inversion below this mean, normal approx. above


def _seed_of(*parts: object) -> int:
    """A stable 64-bit seed from parts (``hash()`` is salted per process, so it will not do)."""
    text = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def seeded_rng(*parts: object) -> random.Random:
    """A ``random.Random`` that every process seeds the same way from the same ``parts``."""
    return random.Random(_seed_of(*parts))


def conditional(weights: Iterable[float]) -> tuple[float, ...]:
    """Weights as the chances that :func:`multinomial` needs: each share of what is left."""
    weights = [float(w) for w in weights]
    left = [sum(weights[i:]) for i in range(len(weights))]
    return tuple(w / rest if rest > 0 else 0.0 for w, rest in zip(weights, left, strict=True))


def normal(rnd: Rand) -> float:
    """A standard normal deviate (Box-Muller) from ``rnd`` alone, stable across Python versions."""
    return math.sqrt(-2.0 * math.log(1.0 - rnd())) * math.cos(2.0 * math.pi * rnd())


def binomial(rnd: Rand, n: int, p: float) -> int:
    """Binomial(n, p): exact inversion for small means, normal approximation above (cheap)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rnd, n, 1.0 - p)
    mean = n * p
    if mean >= _INVERSION_MAX_MEAN:
        k = int(mean + normal(rnd) * math.sqrt(mean * (1.0 - p)) + 0.5)
        return min(n, max(0, k))
    q = 1.0 - p
    ratio = p / q
    pmf = q**n
    cdf = pmf
    u = rnd()
    k = 0
    while u > cdf and k < n:
        pmf *= ratio * (n - k) / (k + 1)
        k += 1
        cdf += pmf
    return k


def multinomial(rnd: Rand, n: int, shares: Sequence[float]) -> list[int]:
    """Split ``n`` into categories by sequential binomials (``shares`` from :func:`conditional`)."""
    out = [0] * len(shares)
    for i, p in enumerate(shares):
        if n <= 0:
            break
        x = binomial(rnd, n, p)
        out[i] = x
        n -= x
    out[-1] += n  # the last share is 1; this only catches rounding
    return out


def subsample(rnd: Rand, draws: int, counts: Sequence[int]) -> list[int]:
    """Draw ``draws`` of the units counted in ``counts`` without replacement (hypergeometric).

    This is how late data stays consistent: the settled part of a day is a subset of its calls,
    so the part that reached each outcome is a subset of that outcome's final count.
    """
    total = sum(counts)
    if draws >= total:
        return list(counts)
    if draws <= 0:
        return [0] * len(counts)
    if 2 * draws > total:  # drawing the complement is cheaper
        left_out = subsample(rnd, total - draws, counts)
        return [c - x for c, x in zip(counts, left_out, strict=True)]
    remaining = list(counts)
    out = [0] * len(counts)
    for left in range(total, total - draws, -1):
        r = int(rnd() * left)
        for i, c in enumerate(remaining):
            if r < c:
                out[i] += 1
                remaining[i] -= 1
                break
            r -= c
    return out
