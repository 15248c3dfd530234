"""Parse and validate one Diagnostic Flow reply body into item rows (:class:`ItemRows`).

Why columnar: the store writes Arrow tables, and a reply is ~20 items of ten fields; building ten
lists once is cheaper than building per-item objects and transposing them later. At 1,000+
replies/s this function must stay a small fraction of one core, so validation uses ``type(x) is``
checks and one pass over the items.

What is accepted (``applications`` is the only key that matters; other top-level keys are ignored):

* ``{"applications": {"<url>": [item, ...], ...}}`` -- the shape of the API's own example.
* ``{"applications": []}`` / ``{"applications": {}}`` -- no data: a valid, complete, zero-row
  answer (PHP's ``json_encode`` writes an empty associative array as ``[]``).
* An application's items as a list, or as an object whose values are the items (PHP writes an
  array with non-sequential keys as ``{"0": {...}, "2": {...}}``).
* ``applications`` as a list (the document calls it an "array"), each element one of:
  - a group ``{"application": "<url>", "items": [item, ...]}`` (``"url"`` for ``"application"``);
  - a mapping ``{"<url>": [item, ...], ...}`` (every value a list or object of items);
  - a bare item, whose application is its own ``"application"``/``"url"`` string, else ``""``.

An item is an object with string ``page``, ``form``, ``item`` and the six counters; extra keys are
ignored (forward compatibility). Counters are non-negative integers of at most
:data:`MAX_PLAUSIBLE_COUNT`: a larger one cannot be a day's (or a month's) visits, and the sums the
views take over millions of such rows would overflow. Booleans are not integers (``true`` is a
JSON boolean, not a count). A float is accepted only if it is a whole number (``3.0`` -> ``3``:
lossless, and some encoders write large or computed counts that way); ``3.5``, ``NaN`` and
``Infinity`` are rejected. A string of plain ASCII digits (``"985"``) is a count too: the document
gives no type for the counters, and a PHP service that passes database values through
``json_encode`` writes every number that way; any other string (sign, spaces, ``"3.0"``) is not.

Everything else raises :class:`ReplyError` with a short reason for the ledger: bytes that are not
UTF-8 JSON (a UTF-8 BOM is tolerated), a top level that is not an object, an ``{"error": ...}`` body
(even with HTTP 200), a missing or mistyped ``applications``, an item that is not an object, a
missing field, a bad counter, or a text field that is not a string (or holds a lone surrogate,
which no Parquet writer can store). The same item appearing twice in one reply is kept twice: the
raw body is the authority and a data-quality view can flag it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from harvester.errors import ReplyError
from harvester.items import COUNTER_FIELDS, TEXT_FIELDS, ItemRows

_fast_loads: Callable[[bytes], Any] | None
try:  # a dependency on CPython (pyproject.toml); without it the standard decoder does it all
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - PyPy, or an install without it
    _fast_loads = None

# The largest counter a reply may hold: 10^12 per item per reply. The busiest IVR systems take
# millions of calls a day, so a month's count of one item stays below 10^11; 10^12 leaves an order
# of magnitude on top. A larger count is a broken reply, and a sum of 10^6 rows of such counts
# still fits int64 (10^18 < 9.2 x 10^18), so the views' SUMs cannot overflow on stored data.
MAX_PLAUSIBLE_COUNT = 10**12

# A digit string longer than this cannot be a count of at most MAX_PLAUSIBLE_COUNT (13 digits).
_MAX_COUNT_DIGITS = len(str(MAX_PLAUSIBLE_COUNT))

# Keys under which a list element of ``applications`` may name its application or its items.
_APP_KEYS = ("application", "url")
_ITEMS_KEY = "items"

# Reasons go into the ledger and log lines: quote at most this many characters of a bad value.
_REPR_LIMIT = 60
# An error reply's text goes into the ledger and the summary: at most this many characters.
ERROR_TEXT_LIMIT = 200


def parse_reply(body: bytes) -> ItemRows:
    """Validate ``body`` (a 200 reply's bytes) and return its rows; raise ReplyError if invalid.

    Valid bodies are decoded by orjson, ~4x faster than :mod:`json` (whose decode was three
    quarters of this function's time). The standard decoder stays the rule: a body orjson refuses,
    or whose rows do not validate, is parsed again the standard way, so what is accepted, what is
    rejected and the reason given are exactly the standard decoder's. Where the two decoders
    differ (orjson reads integers past 64 bits as floats; it refuses lone surrogates, a BOM and
    ``1e400``), the fast path fails and never passes what the standard path would refuse.
    """
    if _fast_loads is not None:
        try:
            return _rows_of(_fast_loads(body), check_surrogates=False)
        except (ValueError, ReplyError):  # orjson.JSONDecodeError is a ValueError
            pass
    return _parse_standard(body)


def _parse_standard(body: bytes) -> ItemRows:
    """:func:`parse_reply` with the standard library's decoder, whose verdicts are the rule."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReplyError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        document = _DECODER.decode(text)
    except ReplyError:
        raise
    except RecursionError:
        raise ReplyError("body is not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() digit limits of huge numbers
        raise ReplyError(f"body is not JSON: {_short(str(exc))}") from None
    # Lone surrogates can only enter through \\uD8xx escapes; check strings only when one is seen.
    return _rows_of(document, check_surrogates="\\ud" in text or "\\uD" in text)


def _rows_of(document: Any, *, check_surrogates: bool) -> ItemRows:
    """The rows of a decoded body, validated (see the module notes for what is accepted)."""
    if type(document) is not dict:
        raise ReplyError(f"top level is {_json_type(document)}, not an object")
    error = document.get("error")
    if error is not None and error != "":
        raise ReplyError(f"error reply: {_short(error if type(error) is str else repr(error))}")
    if "applications" not in document:
        raise ReplyError("no 'applications' key")
    out = ItemRows()
    applications = document["applications"]
    if type(applications) is dict:
        for url, items in applications.items():
            _take_items(out, url, items, f"applications[{_short(url)!r}]")
    elif type(applications) is list:
        for index, element in enumerate(applications):
            _take_list_element(out, element, f"applications[{index}]")
    else:
        raise ReplyError(f"'applications' is {_json_type(applications)}, not an object or list")
    if check_surrogates:
        _check_encodable(out)
    return out


def error_message(body: bytes, redact: Callable[[str], str]) -> str:
    """The ``{"error": ...}`` text of an error reply, redacted *then* shortened (so no cut can
    leave a piece of a secret too short to recognise); a placeholder when there is none."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError, RecursionError):
        message = None
    if not message:
        return "no error message"
    return _cut(redact(str(message)), ERROR_TEXT_LIMIT)


def _take_list_element(out: ItemRows, element: object, where: str) -> None:
    """One element of a list-shaped ``applications``: a group, a mapping or a bare item."""
    if type(element) is not dict:
        raise ReplyError(f"{where} is {_json_type(element)}, not an object")
    if _ITEMS_KEY in element and type(element[_ITEMS_KEY]) in (list, dict):
        url = _application_of(element, where)
        _take_items(out, url, element[_ITEMS_KEY], f"{where}.{_ITEMS_KEY}")
    elif element and all(type(value) in (list, dict) for value in element.values()):
        for url, items in element.items():
            _take_items(out, url, items, f"{where}[{_short(url)!r}]")
    else:
        try:
            _take_item(out, _application_of(element, where), element)
        except _ItemError as exc:
            raise ReplyError(f"{where}{exc.args[0]}") from None


def _application_of(element: dict[str, Any], where: str) -> str:
    for key in _APP_KEYS:
        if key in element:
            url = element[key]
            if type(url) is not str:
                raise ReplyError(f"{where}.{key} is {_json_type(url)}, not a string")
            return url
    return ""


def _take_items(out: ItemRows, url: str, items: object, where: str) -> None:
    if type(items) is dict:
        items = list(items.values())
    if type(items) is not list:
        raise ReplyError(f"{where} is {_json_type(items)}, not a list of items")
    index = 0
    try:
        for index, item in enumerate(items):  # noqa: B007 - read in the handler below
            _take_item(out, url, item)
    except _ItemError as exc:
        # The location is formatted only on failure: building it per item costs ~10% of a parse.
        raise ReplyError(f"{where}[{index}]{exc.args[0]}") from None


class _ItemError(Exception):
    """An item's problem, without its location; the caller prefixes where it is."""


def _take_item(out: ItemRows, url: str, item: object) -> None:
    """Validate one item fully before appending, so a bad item never leaves ragged columns.

    The common case is one chain of cheap ``type() is`` and range tests; anything unusual (whole
    floats, errors) goes to the slow path.
    """
    if type(item) is not dict:
        raise _ItemError(f" is {_json_type(item)}, not an object")
    try:
        page = item["page"]
        form = item["form"]
        name = item["item"]
        visits = item["visits"]
        filled = item["filled"]
        nomatch = item["nomatch"]
        noinput = item["noinput"]
        transfer = item["transfer"]
        disconnect = item["disconnect"]
    except KeyError as exc:
        raise _ItemError(f" has no {exc.args[0]!r}") from None
    if not (type(page) is str and type(form) is str and type(name) is str):
        bad = next(key for key in TEXT_FIELDS if type(item[key]) is not str)
        raise _ItemError(f".{bad} is {_json_type(item[bad])}, not a string")
    if not (
        type(visits) is int
        and type(filled) is int
        and type(nomatch) is int
        and type(noinput) is int
        and type(transfer) is int
        and type(disconnect) is int
        and 0 <= visits <= MAX_PLAUSIBLE_COUNT
        and 0 <= filled <= MAX_PLAUSIBLE_COUNT
        and 0 <= nomatch <= MAX_PLAUSIBLE_COUNT
        and 0 <= noinput <= MAX_PLAUSIBLE_COUNT
        and 0 <= transfer <= MAX_PLAUSIBLE_COUNT
        and 0 <= disconnect <= MAX_PLAUSIBLE_COUNT
    ):
        visits, filled, nomatch, noinput, transfer, disconnect = (
            _whole_count(item[key], key) for key in COUNTER_FIELDS
        )
    out.application.append(url)
    out.page.append(page)
    out.form.append(form)
    out.item.append(name)
    out.visits.append(visits)
    out.filled.append(filled)
    out.nomatch.append(nomatch)
    out.noinput.append(noinput)
    out.transfer.append(transfer)
    out.disconnect.append(disconnect)


def _whole_count(value: object, key: str) -> int:
    """The slow path of counter validation: whole floats and digit strings are accepted,
    everything else rejected."""
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_PLAUSIBLE_COUNT:
        return int(value)
    if type(value) is str and value.isascii() and value.isdigit():
        if len(value.lstrip("0")) > _MAX_COUNT_DIGITS:  # before int(): no huge conversions
            raise _ItemError(f".{key} is implausibly large: {_short(repr(value))}")
        value = int(value)
    if type(value) is int and 0 <= value <= MAX_PLAUSIBLE_COUNT:
        return value
    if type(value) not in (int, float):
        raise _ItemError(f".{key} is {_json_type(value)}, not an integer")
    assert isinstance(value, int | float)
    if value < 0:
        raise _ItemError(f".{key} is negative: {_short(repr(value))}")
    if type(value) is float and not value.is_integer():
        raise _ItemError(f".{key} is not a whole count: {_short(repr(value))}")
    raise _ItemError(
        f".{key} is implausibly large (over {MAX_PLAUSIBLE_COUNT:.0e}): {_short(repr(value))}"
    )


def _check_encodable(out: ItemRows) -> None:
    for name in ("application", *TEXT_FIELDS):
        for row, value in enumerate(getattr(out, name)):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ReplyError(f"row [{row}]: {name} holds a lone UTF-16 surrogate") from None


def _reject_constant(name: str) -> object:
    raise ReplyError(f"body is not JSON: {name} is not a JSON number")


# Built once: json.loads with a keyword argument builds a new decoder and scanner per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages a user can match against the body."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) in (int, float):
        return "a number"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "a list"
    return "an object"


def _short(text: str) -> str:
    return _cut(text, _REPR_LIMIT)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
