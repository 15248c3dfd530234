"""Configuration: read a TOML file once, validate every key, freeze the result.

Nothing else in the harvester reads TOML or the environment for settings: the CLI calls
:func:`load_config` (or :func:`default_config` for commands that need none), applies its flags with
:func:`dataclasses.replace`, and passes the frozen :class:`Config` down. Every problem is
reported as one :class:`~harvester.errors.ConfigError` line that names the file, the
``[section] key`` and what is
wrong, with a "did you mean" for misspelt keys, before anything is sent or written.
"""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import os
import re
import stat
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from harvester.errors import ConfigError
from harvester.jobs import Grain

DEFAULT_BASE_URL = "https://voicetrends.plumvoice.com/api"
DEFAULT_CONFIG_NAME = "config.toml"
CONFIG_ENV = "HARVESTER_CONFIG"
TOOLS = ("dev", "insight", "fuseplus")  # the `tool` values POST /auth accepts (API notes)
RELATIVE_DATES = ("today", "yesterday")
# Phone numbers as the API's path takes them: digits only (no +, spaces or dashes), or ALL.
PHONE_PATTERN = re.compile(r"^[0-9]{3,15}$")
ALL_PHONES = "ALL"
# Keys whose values are secrets: an error about them names the key and the type, never the value.
SECRET_KEYS = frozenset({"password", "account_password"})
# What *_env keys must hold: a variable's name. Anything else is most likely the password itself,
# pasted into the wrong key, and must not be echoed back in "variable ... is not set".
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# tomllib (3.11) reports where a syntax error is only inside its message.
_TOML_WHERE = re.compile(r"\(at line (\d+), column \d+\)")
_TOML_SECTION = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"'-]+)\s*=")


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it (the Authorization header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ApiConfig:
    """``[api]``: where the API is, how to authenticate, how hard to push it."""

    base_url: str = DEFAULT_BASE_URL
    login: str | None = None
    password: Secret | None = None
    tool: str | None = None
    account_login: str | None = None
    account_password: Secret | None = None
    concurrency: int = 4
    timeout_seconds: float = 120.0
    max_attempts: int = 6
    # A reply longer than this is not read further and is quarantined. Real replies are a few KB
    # (a month of ALL is ~100 KB); 16 MiB is two orders of magnitude above anything real.
    max_reply_bytes: int = 16 * 2**20
    ca_bundle: Path | None = None  # a PEM file of extra CAs to trust (a company proxy's own)

    @property
    def uses_account(self) -> bool:
        """True when temporary credentials are obtained (and renewed) from the account login."""
        return self.account_login is not None


@dataclass(frozen=True)
class QuotaConfig:
    """``[quota]``: the account's shared request budget; the server's headers are the authority."""

    limit: int = 150
    window_seconds: float = 900.0
    reserve: int = 0


@dataclass(frozen=True)
class HarvestConfig:
    """``[harvest]``: which phones and dates to fetch, in which window size."""

    phones: tuple[str, ...] = ()
    start: dt.date | None = None
    end: dt.date | str = "yesterday"
    window: Grain = Grain.DAY
    lookback_days: int = 3
    timezone: str | None = None

    def zone(self) -> dt.tzinfo:
        """The account's local time zone, in which "today" and "yesterday" are meant."""
        if self.timezone is None:
            local = dt.datetime.now().astimezone().tzinfo
            assert local is not None
            return local
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: where data lands and how often it is made durable."""

    path: Path = Path("voicetrends-data")
    flush_jobs: int = 500
    flush_seconds: float = 2.0
    auto_compact: bool = True


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    api: ApiConfig = field(default_factory=ApiConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    source: Path | None = None

    def secrets(self) -> tuple[str, ...]:
        """Every secret value this config holds, for the log redaction safety net: the passwords
        and the basic-auth token of the fixed pair (base64 of "login:password")."""
        api = self.api
        found = [s.reveal() for s in (api.password, api.account_password) if s]
        if api.login is not None and api.password is not None:
            pair = f"{api.login}:{api.password.reveal()}".encode()
            found.append(base64.b64encode(pair).decode())
        return tuple(found)


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """``$HARVESTER_CONFIG`` if set, else ``config.toml`` in the current folder."""
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)


def parse_date(value: object, where: str) -> dt.date:
    """A ``YYYY-MM-DD`` string or TOML date, else a ConfigError naming ``where``."""
    if isinstance(value, dt.datetime):
        raise ConfigError(f"{where}: expected a date (YYYY-MM-DD), got a date-time")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: not a valid date (YYYY-MM-DD): {value!r}") from None
    raise ConfigError(f"{where}: expected a date (YYYY-MM-DD), got {type(value).__name__}")


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


class _Section:
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
            shown = f"a {type(value).__name__} (not shown)" if key in SECRET_KEYS else repr(value)
            raise ConfigError(f"{self.where(key)}: expected {_kind_name(kinds)}, got {shown}")
        return value

    def raw(self, key: str, default: Any) -> Any:
        self.known.add(key)
        return self.table.get(key, default)

    def positive(self, key: str, default: int, *, zero_ok: bool = False) -> int:
        value = self.get(key, int, default)
        if value < 0 or (value == 0 and not zero_ok):
            floor = "0 or more" if zero_ok else "at least 1"
            raise ConfigError(f"{self.where(key)}: must be {floor}, got {value}")
        return int(value)

    def seconds(self, key: str, default: float) -> float:
        value = self.get(key, (int, float), default)
        if not value > 0:
            raise ConfigError(f"{self.where(key)}: must be a positive number of seconds")
        return float(value)

    def check_unknown(self) -> None:
        for key in self.table:
            if key not in self.known:
                hint = difflib.get_close_matches(key, sorted(self.known), n=1)
                suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
                raise ConfigError(f'{self.source}: [{self.name}] unknown key "{key}"{suggestion}')


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


SECTIONS = ("api", "quota", "harvest", "store")


def load_config(
    path: Path,
    *,
    env: Mapping[str, str] = os.environ,
    warn: Callable[[str], None] | None = None,
) -> Config:
    """Read and validate ``path``. Raises ConfigError naming the key; never echoes a secret."""
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: config file not found (use -c/--config or ${CONFIG_ENV})"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: config file is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {_os_reason(exc)}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {_toml_where(text, str(exc))}not valid TOML: {exc}") from None
    for name in data:
        if name not in SECTIONS:
            hint = difflib.get_close_matches(name, SECTIONS, n=1)
            suggestion = f' (did you mean "[{hint[0]}]"?)' if hint else ""
            raise ConfigError(f'{source}: unknown section "[{name}]"{suggestion}')
    say = warn or (lambda message: warnings.warn(message, stacklevel=2))
    api = _load_api(_Section("api", data.get("api", {}), source), env, say, path)
    quota = _load_quota(_Section("quota", data.get("quota", {}), source))
    harvest = _load_harvest(_Section("harvest", data.get("harvest", {}), source))
    store = _load_store(_Section("store", data.get("store", {}), source), path)
    return Config(api=api, quota=quota, harvest=harvest, store=store, source=path)


def _toml_where(text: str, message: str) -> str:
    """``"[section] key: "`` of the line a TOML syntax error points at, or ``""``."""
    found = _TOML_WHERE.search(message)
    if found is None:
        return ""
    lines = text.splitlines()[: int(found.group(1))]
    if not lines:
        return ""
    key = _TOML_KEY.match(lines[-1])
    if key is None:
        return ""
    section = next((m.group(1) for line in reversed(lines) if (m := _TOML_SECTION.match(line))), "")
    return f"[{section}] {key.group(1)}: " if section else f"{key.group(1)}: "


def _os_reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def _secret_from_env(section: _Section, key: str, env: Mapping[str, str]) -> Secret | None:
    variable = section.get(key, str, None)
    if variable is None:
        return None
    if not ENV_NAME_PATTERN.match(variable):
        raise ConfigError(
            f"{section.where(key)}: must be the name of an environment variable (letters, digits, "
            "_), not the password itself"
        )
    value = env.get(variable)
    if not value:
        raise ConfigError(f"{section.where(key)}: environment variable {variable} is not set")
    return Secret(value)


def _load_api(
    s: _Section, env: Mapping[str, str], warn: Callable[[str], None], path: Path
) -> ApiConfig:
    base_url = s.get("base_url", str, DEFAULT_BASE_URL).rstrip("/")
    if "@" in re.split(r"[/?#]", base_url.split("://", 1)[-1], maxsplit=1)[0]:
        # user:password@host, or a scheme-less one urlsplit cannot see: never echo it back
        raise ConfigError(f"{s.where('base_url')}: must not contain credentials (user:pass@)")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{s.where('base_url')}: must be an http(s) URL with a host, "
            f"e.g. {DEFAULT_BASE_URL!r}, got {base_url!r}"
        )
    login = s.get("login", str, None)
    password = _secret_from_env(s, "password_env", env)
    inline = s.get("password", str, None)
    if inline is not None:
        if password is not None:
            raise ConfigError(f"{s.where('password')}: give password or password_env, not both")
        password = Secret(inline)
        warn(f"{s.source}: [api] password is written in the file; prefer password_env")
        _warn_if_readable_by_others(path, warn)
    tool = s.get("tool", str, None)
    account_login = s.get("account_login", str, None)
    account_password = _secret_from_env(s, "account_password_env", env)
    inline_account = s.get("account_password", str, None)
    if inline_account is not None:
        if account_password is not None:
            raise ConfigError(
                f"{s.where('account_password')}: give account_password or "
                "account_password_env, not both"
            )
        account_password = Secret(inline_account)
        warn(f"{s.source}: [api] account_password is written in the file; prefer *_env")
        _warn_if_readable_by_others(path, warn)
    if tool is not None and tool not in TOOLS:
        raise ConfigError(f"{s.where('tool')}: must be one of {', '.join(TOOLS)}, got {tool!r}")
    if account_login is not None:
        if account_password is None:
            raise ConfigError(f"{s.where('account_password_env')}: required with account_login")
        if tool is None:
            raise ConfigError(f"{s.where('tool')}: required with account_login")
    concurrency = s.positive("concurrency", ApiConfig.concurrency)
    timeout = s.seconds("timeout_seconds", ApiConfig.timeout_seconds)
    max_attempts = s.positive("max_attempts", ApiConfig.max_attempts)
    max_reply_bytes = s.positive("max_reply_bytes", ApiConfig.max_reply_bytes)
    ca_bundle = _ca_bundle(s, path)
    s.check_unknown()
    if login is not None and password is None:
        raise ConfigError(f"{s.where('password_env')}: required with login")
    return ApiConfig(
        base_url=base_url,
        login=login,
        password=password,
        tool=tool,
        account_login=account_login,
        account_password=account_password,
        concurrency=concurrency,
        timeout_seconds=timeout,
        max_attempts=max_attempts,
        max_reply_bytes=max_reply_bytes,
        ca_bundle=ca_bundle,
    )


def _ca_bundle(s: _Section, config_path: Path) -> Path | None:
    raw = s.get("ca_bundle", str, None)
    if raw is None:
        return None
    bundle = Path(raw).expanduser()
    if not bundle.is_absolute():
        bundle = config_path.parent / bundle
    if not bundle.is_file():
        raise ConfigError(f"{s.where('ca_bundle')}: no such file: {bundle}")
    return bundle


def _warn_if_readable_by_others(path: Path, warn: Callable[[str], None]) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warn(f"{path}: holds a password and is readable by other users (chmod 600 {path})")


def _load_quota(s: _Section) -> QuotaConfig:
    limit = s.positive("limit", QuotaConfig.limit)
    window = s.seconds("window_seconds", QuotaConfig.window_seconds)
    reserve = s.positive("reserve", QuotaConfig.reserve, zero_ok=True)
    s.check_unknown()
    if reserve >= limit:
        raise ConfigError(f"{s.where('reserve')}: must be less than limit ({limit})")
    return QuotaConfig(limit=limit, window_seconds=window, reserve=reserve)


def _load_harvest(s: _Section) -> HarvestConfig:
    phones_raw = s.raw("phones", None)
    phones = () if phones_raw is None else parse_phones(phones_raw, s.where("phones"))
    start_raw = s.raw("start", None)
    start = None if start_raw is None else parse_date(start_raw, s.where("start"))
    end = parse_end(s.raw("end", "yesterday"), s.where("end"))
    window_raw = s.get("window", str, Grain.DAY.value)
    try:
        window = Grain(window_raw)
    except ValueError:
        raise ConfigError(
            f"{s.where('window')}: must be day, week or month, got {window_raw!r}"
        ) from None
    lookback = s.positive("lookback_days", HarvestConfig.lookback_days, zero_ok=True)
    timezone = s.get("timezone", str, None)
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{s.where('timezone')}: unknown time zone {timezone!r} (e.g. America/New_York)"
            ) from None
    s.check_unknown()
    if start is not None and isinstance(end, dt.date) and start > end:
        raise ConfigError(f"{s.where('start')}: {start} is after end {end}")
    return HarvestConfig(
        phones=phones,
        start=start,
        end=end,
        window=window,
        lookback_days=lookback,
        timezone=timezone,
    )


def _load_store(s: _Section, config_path: Path) -> StoreConfig:
    raw_path = s.get("path", str, str(StoreConfig.path))
    if not raw_path.strip():
        raise ConfigError(f"{s.where('path')}: must not be empty")
    # Relative to the config file's folder, so cron jobs work whatever their working directory.
    path = Path(raw_path).expanduser()
    if not path.is_absolute():
        path = config_path.parent / path
    flush_jobs = s.positive("flush_jobs", StoreConfig.flush_jobs)
    flush_seconds = s.seconds("flush_seconds", StoreConfig.flush_seconds)
    auto_compact = s.get("auto_compact", bool, StoreConfig.auto_compact)
    s.check_unknown()
    return StoreConfig(
        path=path, flush_jobs=flush_jobs, flush_seconds=flush_seconds, auto_compact=auto_compact
    )
