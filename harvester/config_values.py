"""One TOML value read and checked: dates, phone lists, and the typed keys of one table.

Split from :mod:`harvester.config` so that module reads as the list of sections and keys, and this
one as the rules every key obeys (type, bounds, dates the harvester can handle). Every problem is a
:class:`~harvester.errors.ConfigError` naming where the value came from.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from typing import Any

from harvester.errors import ConfigError

RELATIVE_DATES = ("today", "yesterday")
# Phone numbers as the API's path takes them: digits only (no +, spaces or dashes), or ALL.
PHONE_PATTERN = re.compile(r"^[0-9]{3,15}$")
ALL_PHONES = "ALL"
# Keys whose values are secrets or may hold one (a password pasted into a *_env key is an easy
# mistake): an error about them names the key and the type, never the value.
SECRET_KEYS = frozenset({"password", "account_password", "password_env", "account_password_env"})
# The dates the harvester handles, in the config and in every date flag. Python's calendar ends at
# 0001-01-01 and 9999-12-31, and a week, a month, a lookback or "yesterday" stepping past either
# crashed plan and sync; call-centre data is far inside these bounds.
EARLIEST_DATE = dt.date(1900, 1, 1)
LATEST_DATE = dt.date(2999, 12, 31)


def parse_date(value: object, where: str) -> dt.date:
    """A ``YYYY-MM-DD`` string or TOML date, else a ConfigError naming ``where``."""
    if isinstance(value, dt.datetime):
        raise ConfigError(f"{where}: expected a date (YYYY-MM-DD), got a date-time")
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: not a valid date (YYYY-MM-DD): {value!r}") from None
    if not isinstance(value, dt.date):
        raise ConfigError(f"{where}: expected a date (YYYY-MM-DD), got {type(value).__name__}")
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ConfigError(
            f"{where}: {value} is outside the dates the harvester handles "
            f"({EARLIEST_DATE} to {LATEST_DATE})"
        )
    return value


def parse_end(value: object, where: str) -> dt.date | str:
    """A date, or one of ``today`` / ``yesterday`` (resolved later in the account's zone)."""
    if isinstance(value, str) and value.strip().lower() in RELATIVE_DATES:
        return value.strip().lower()
    return parse_date(value, where)


def parse_phones(value: object, where: str) -> tuple[str, ...]:
    """A non-empty list of distinct phone numbers (digits) or ``ALL``."""
    if isinstance(value, str):
        value = [p for p in value.split(",")]
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where}: expected a non-empty list of phone numbers or "ALL"')
    phones: list[str] = []
    for raw in value:
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise ConfigError(f"{where}: phone numbers must be strings, got {raw!r}")
        phone = str(raw).strip()
        if phone.upper() == ALL_PHONES:
            phone = ALL_PHONES
        elif not PHONE_PATTERN.match(phone):
            raise ConfigError(
                f"{where}: {phone!r} is not a phone number (3-15 digits, no spaces or +) or ALL"
            )
        if phone in phones:
            raise ConfigError(f"{where}: {phone} is listed twice")
        phones.append(phone)
    return tuple(phones)


def resolve_end(end: dt.date | str, today: dt.date) -> dt.date:
    """Turn ``today`` / ``yesterday`` into a date."""
    if end == "today":
        return today
    if end == "yesterday":
        return today - dt.timedelta(days=1)
    assert isinstance(end, dt.date)
    return end


class Section:
    """Reads one TOML table, type-checking each key and remembering which keys were used."""

    def __init__(self, name: str, table: object, source: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        self.name = name
        self.table: dict[str, Any] = table
        self.source = source
        self.known: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.source}: [{self.name}] {key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.known.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            shown = f"{_type_name(value)} (not shown)" if key in SECRET_KEYS else repr(value)
            raise ConfigError(f"{self.where(key)}: expected {_kind_name(kinds)}, got {shown}")
        return value

    def raw(self, key: str, default: Any) -> Any:
        self.known.add(key)
        return self.table.get(key, default)

    def positive(self, key: str, default: int, most: int, *, zero_ok: bool = False) -> int:
        value = self.get(key, int, default)
        if value < 0 or (value == 0 and not zero_ok):
            floor = "0 or more" if zero_ok else "at least 1"
            raise ConfigError(f"{self.where(key)}: must be {floor}, got {_short(value)}")
        if value > most:
            raise ConfigError(f"{self.where(key)}: must be at most {most:,}, got {_short(value)}")
        return int(value)

    def seconds(self, key: str, default: float, most: float) -> float:
        value = self.get(key, (int, float), default)
        if not 0 < value <= most:  # also false for nan
            raise ConfigError(
                f"{self.where(key)}: must be a number of seconds above 0 and at most {most:g}, "
                f"got {_short(value)}"
            )
        return float(value)

    def check_unknown(self) -> None:
        for key in self.table:
            if key not in self.known:
                hint = difflib.get_close_matches(key, sorted(self.known), n=1)
                suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
                raise ConfigError(f'{self.source}: [{self.name}] unknown key "{key}"{suggestion}')


def _short(number: float) -> str:
    """A number as given, or its magnitude when printing it would make the line unreadable."""
    text = str(number)
    return text if len(text) <= 24 else f"a number of {len(text)} digits"


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _kind_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)


def _type_name(value: object) -> str:
    """What a TOML value is, in words: "an integer", "a list"."""
    kind = type(value)
    if kind in _KIND_NAMES and kind is not bool:
        return _KIND_NAMES[kind]
    name = {bool: "boolean", list: "list", dict: "table"}.get(kind, kind.__name__)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"
