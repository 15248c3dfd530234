"""The API layer: everything HTTP between the harvester and VoiceTrends, and nothing else.

It sends the data GET and ``POST /auth``, keeps and renews the temporary credentials
(single-flight), reads the quota's reply headers, parses and validates bodies, redacts every
secret from what servers send back, and classifies every exchange into exactly one typed outcome
(:mod:`~harvester.api.outcomes`). It knows nothing of quotas, retries of data requests, plans or
the store: the scheduler matches on outcomes, the store receives rows and bytes.

One concept per module::

    outcomes     the typed outcomes of one exchange (frozen dataclasses)
    transport    the wire: session, proxies, TLS, timeouts, size cap, failure classification
    headers      X-RateLimit-*, Date and Retry-After, read leniently (also the quota gate's)
    reply        a 200 body into ItemRows, validated; a server's error text
    credentials  temporary credentials: a fixed pair, or POST /auth and renewal
    client       ApiClient: one job's request -> one outcome, redacted

Imports inside this package go one way: outcomes/headers/reply <- transport <- credentials <-
client. Names below are imported lazily (PEP 562), so the quota gate's use of ``headers`` costs no
aiohttp import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ApiClient": "harvester.api.client",
    "Credentials": "harvester.api.credentials",
    "CredentialSource": "harvester.api.credentials",
    "open_session": "harvester.api.transport",
    "parse_reply": "harvester.api.reply",
}

__all__ = ["ApiClient", "CredentialSource", "Credentials", "open_session", "parse_reply"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harvester.api' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from harvester.api.client import ApiClient
    from harvester.api.credentials import Credentials, CredentialSource
    from harvester.api.reply import parse_reply
    from harvester.api.transport import open_session
