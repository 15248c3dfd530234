"""The service's bytes on the wire: JSON as it writes it, the headers on every reply, the faults.

Why it exists: a client is only tested if the replies look like the real ones down to the byte:
compact JSON with every slash escaped (``https:\\/\\/...``), a ``{"error": ...}`` body on every
error, ``X-RateLimit-*`` and ``Date`` on every reply, ``YYYYMMDD`` dates and basic auth parsed as
strictly as the service does, and the broken replies (malformed and truncated bodies) that a
careful client must reject. What a request *means* is decided in :mod:`harvester.simulator.service`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import json
import random

from aiohttp import web

from harvester.simulator.flows import APPLICATIONS
from harvester.simulator.quota import QuotaState
from harvester.simulator.traffic import COUNT_FIELDS, Counts, Key

METHOD_NOT_ALLOWED = "invalid HTTP method supplied (only POST allowed)"  # verbatim from the doc


class BadRequest(Exception):
    """A request parameter is malformed or impossible: the reply is a 400 with this message."""


def encode_json(payload: object) -> bytes:
    """JSON as the real service writes it: compact, with every slash escaped (``https:\\/\\/``)."""
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


# Pre-encoded pieces of a 200 body: building it from these is several times faster than
# json.dumps of dicts, and serving thousands of fresh replies a second is what benchmarks need.
_APP_JSON = tuple(encode_json(app.url).decode() for app in APPLICATIONS)
_ITEM_JSON = tuple(
    tuple(
        encode_json({"page": i.page, "form": i.form, "item": i.item}).decode()[:-1] for i in a.items
    )
    for a in APPLICATIONS
)
_COUNTS_JSON = "".join(f',"{name}":%d' for name in COUNT_FIELDS) + "}"


def render_body(sums: dict[Key, Counts]) -> bytes:
    """``{"applications": ...}`` for item-wise sums, byte for byte as :func:`encode_json` has it."""
    apps: dict[int, list[str]] = {}
    for (app_index, item_index), counts in sorted(sums.items()):
        item = _ITEM_JSON[app_index][item_index] + _COUNTS_JSON % counts
        apps.setdefault(app_index, []).append(item)
    inner = ",".join(f"{_APP_JSON[a]}:[{','.join(items)}]" for a, items in apps.items())
    return ('{"applications":{' + inner + "}}").encode()


def reply_headers(quota: QuotaState, now: float) -> dict[str, str]:
    """What every reply carries, errors included: the quota and the server clock's ``Date``."""
    return {
        "Content-Type": "application/json",
        "Date": email.utils.formatdate(now, usegmt=True),
        "X-RateLimit-Limit": str(quota.limit),
        "X-RateLimit-Remaining": str(quota.remaining),
        "X-RateLimit-Reset": str(quota.reset),
    }


def basic_auth(header: str) -> tuple[str, str] | None:
    """``(login, password)`` from a basic ``Authorization`` header, or None if it is not one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (login, password) if colon else None


def parse_day(text: str, name: str) -> dt.date:
    """``YYYYMMDD`` to a date; 400 for anything else, impossible dates (20240230) included."""
    if len(text) != 8 or not text.isdigit():
        raise BadRequest(f"invalid {name} date: expected YYYYMMDD")
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise BadRequest(f"invalid {name} date: no such day") from None


async def send_truncated(
    request: web.Request, body: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Promise the whole body in Content-Length, send half of it, then hang up."""
    stream = web.StreamResponse(status=200, headers=headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return stream


def malformed_body(rng: random.Random, body: bytes) -> bytes:
    """A 200 body a careful client must reject: cut-off JSON, an HTML error page, wrong shapes."""
    variants = (
        body[: max(1, len(body) // 3)],  # valid prefix, then nothing
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",  # a proxy's page, as JSON
        b'{"applications":{"https:\\/\\/demos.plumgroup.com\\/vxml\\/start.php":'
        b'[{"page":"main.php","form":"main_menu","item":"selection","visits":"many"}]}}',
        b'{"applications":{"https:\\/\\/demos.plumgroup.com\\/vxml\\/start.php":'
        b'[{"page":"main.php","form":"main_menu","item":"selection","visits":-3,"filled":-3,'
        b'"nomatch":0,"noinput":0,"transfer":0,"disconnect":0}]}}',
        b'{"applications":"none"}',
        b'{"status":"ok"}',
        b"",
    )
    return variants[rng.randrange(len(variants))]
