"""Parse and validate one Diagnostic Flow reply body into columns.

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
ignored (forward compatibility). Counters are non-negative integers that fit a signed 64-bit column.
Booleans are not integers (``true`` is a JSON boolean, not a count). A float is accepted only if it
is a whole number (``3.0`` -> ``3``: lossless, and some encoders write large or computed counts that
way); ``3.5``, ``NaN``, ``Infinity`` and numeric strings are rejected.

Everything else raises :class:`ReplyError` with a short reason for the ledger: bytes that are not
UTF-8 JSON (a UTF-8 BOM is tolerated), a top level that is not an object, an ``{"error": ...}`` body
(even with HTTP 200), a missing or mistyped ``applications``, an item that is not an object, a
missing field, a bad counter, or a text field that is not a string (or holds a lone surrogate,
which no Parquet writer can store). The same item appearing twice in one reply is kept twice: the
raw body is the authority and a data-quality view can flag it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harvester.errors import ReplyError
from harvester.items import COLUMNS, COUNTER_FIELDS, TEXT_FIELDS

# The counters land in Parquet INT64 columns (the contract's BIGINT): anything larger cannot be
# stored, so it is a schema error rather than an overflow later in the writer.
INT64_MAX = 2**63 - 1

# Keys under which a list element of ``applications`` may name its application or its items.
_APP_KEYS = ("application", "url")
_ITEMS_KEY = "items"

# Reasons go into the ledger and log lines: quote at most this many characters of a bad value.
_REPR_LIMIT = 60


@dataclass(slots=True, eq=True)
class ParsedReply:
    """A validated reply as one list per column, in :data:`COLUMNS` order; ``len()`` is rows."""

    application: list[str] = field(default_factory=list)
    page: list[str] = field(default_factory=list)
    form: list[str] = field(default_factory=list)
    item: list[str] = field(default_factory=list)
    visits: list[int] = field(default_factory=list)
    filled: list[int] = field(default_factory=list)
    nomatch: list[int] = field(default_factory=list)
    noinput: list[int] = field(default_factory=list)
    transfer: list[int] = field(default_factory=list)
    disconnect: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.application)

    def columns(self) -> dict[str, list[str] | list[int]]:
        """Column name -> values, in :data:`COLUMNS` order (what the store's writer consumes)."""
        return {name: getattr(self, name) for name in COLUMNS}

    def rows(self) -> Iterator[tuple[str, str, str, str, int, int, int, int, int, int]]:
        """The rows as tuples in :data:`COLUMNS` order (tests and debugging; not the hot path)."""
        return zip(
            self.application,
            self.page,
            self.form,
            self.item,
            self.visits,
            self.filled,
            self.nomatch,
            self.noinput,
            self.transfer,
            self.disconnect,
            strict=True,
        )


def parse_reply(body: bytes) -> ParsedReply:
    """Validate ``body`` (a 200 reply's bytes) and return its rows; raise ReplyError if invalid."""
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
    if type(document) is not dict:
        raise ReplyError(f"top level is {_json_type(document)}, not an object")
    error = document.get("error")
    if error is not None and error != "":
        raise ReplyError(f"error reply: {_short(error if type(error) is str else repr(error))}")
    if "applications" not in document:
        raise ReplyError("no 'applications' key")
    # Lone surrogates can only enter through \\uD8xx escapes; check strings only when one is seen.
    check_surrogates = "\\ud" in text or "\\uD" in text
    out = ParsedReply()
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


def _take_list_element(out: ParsedReply, element: object, where: str) -> None:
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


def _take_items(out: ParsedReply, url: str, items: object, where: str) -> None:
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


def _take_item(out: ParsedReply, url: str, item: object) -> None:
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
        and 0 <= visits <= INT64_MAX
        and 0 <= filled <= INT64_MAX
        and 0 <= nomatch <= INT64_MAX
        and 0 <= noinput <= INT64_MAX
        and 0 <= transfer <= INT64_MAX
        and 0 <= disconnect <= INT64_MAX
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
    """The slow path of counter validation: whole floats are accepted, everything else rejected."""
    if type(value) is int and 0 <= value <= INT64_MAX:
        return value
    if type(value) is float:
        if value.is_integer() and 0 <= value <= INT64_MAX:
            return int(value)
        if value < 0:
            raise _ItemError(f".{key} is negative: {_short(repr(value))}")
        raise _ItemError(f".{key} is not a whole count that fits int64: {_short(repr(value))}")
    if type(value) is int:
        if value < 0:
            raise _ItemError(f".{key} is negative: {_short(repr(value))}")
        raise _ItemError(f".{key} does not fit int64: {_short(repr(value))}")
    raise _ItemError(f".{key} is {_json_type(value)}, not an integer")


def _check_encodable(out: ParsedReply) -> None:
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
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."
