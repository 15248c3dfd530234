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
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from harvester.config_values import (
    Section,
    parse_date,
    parse_end,
    parse_phones,
)
from harvester.errors import ConfigError
from harvester.jobs import Grain

DEFAULT_BASE_URL = "https://voicetrends.plumvoice.com/api"
DEFAULT_CONFIG_NAME = "config.toml"
CONFIG_ENV = "HARVESTER_CONFIG"
TOOLS = ("dev", "insight", "fuseplus")  # the `tool` values POST /auth accepts (API notes)
# What *_env keys must hold: a variable's name (POSIX: letters, digits, underscore). Anything else
# is most likely the password itself, pasted into the wrong key, and is never echoed back.
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A name that also looks like one by convention (capitals): only such a name is quoted in "is not
# set"; "hunter2" fits ENV_NAME_PATTERN too, and may be the password in the wrong key.
ENV_NAME_SHOWN = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# A store.path that starts like a URL (RFC 3986 scheme, then "://"): never a folder name someone
# means, so one delta-rs cannot use is refused instead of becoming a local folder "ftp:/...".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A UTF-8 byte order mark, which some Windows editors put at the top of a file; TOML forbids it,
# the harvester skips it.
UTF8_BOM = "\ufeff"

# Upper bounds of the numeric keys (README, config.example.toml). Each is far above any real use
# and low enough that nothing downstream overflows: an `inf` timeout crashed aiohttp's timer, an
# `inf` window the quota gate, a huge flush_jobs the store's file numbering.
MAX_CONCURRENCY = 256  # requests in flight; at the API's 150 per 15 minutes, 4 already suffice
MAX_TIMEOUT_SECONDS = 3_600.0  # one request; a reply slower than an hour is a hung connection
MAX_ATTEMPTS = 100  # per job and run; the default is 6
MAX_LIMIT = 10**9  # requests per window: the benchmarks' "lifted quota" (benchmarks/_common.py)
MAX_WINDOW_SECONDS = 86_400.0  # the API's window is 900 s; a day keeps ETAs within the calendar
MAX_LOOKBACK_DAYS = 366  # late data arrives within days; a year keeps lookbacks within the dates
ECONOMY_MODES = ("auto", "off")  # harvest.economy
MAX_FLUSH_JOBS = 100_000  # jobs held in memory until a flush (default 500); a store file holds
# fewer than 2**24 records (store.schema.MAX_RECORDS_PER_FILE)
MAX_FLUSH_SECONDS = 3_600.0  # a crash loses at most this much fetched work
MAX_REPLY_BYTES = 2**30  # the cap on one reply (default 16 MiB); a GiB still fits in memory
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
    # request economy (issue 14): "auto" plans day windows by range arithmetic, "off" sends
    # one request per job as before
    economy: str = "auto"

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


SECTIONS = ("api", "quota", "harvest", "store")


def load_config(
    path: Path,
    *,
    env: Mapping[str, str] = os.environ,
    warn: Callable[[str], None] | None = None,
    missing_hint: str = "",
    need_secrets: bool = True,
) -> Config:
    """Read and validate ``path``. Raises ConfigError naming the key; never echoes a secret.

    ``missing_hint``, if given, ends the message for a file that does not exist in parentheses:
    how the caller's user names another (the CLI passes its ``--config`` flag). Without
    ``need_secrets`` (commands that send nothing: plan, status, query...), a password variable
    that is not set is no error: the password is then None, as if none were configured, so a
    store can be read with the config where only the cron job holds the secret."""
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8").removeprefix(UTF8_BOM)
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: config file not found" + (f" ({missing_hint})" if missing_hint else "")
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
    except ValueError:
        # tomllib lets int() refuse an integer of more than 4,300 digits with a bare ValueError
        raise ConfigError(f"{source}: not valid TOML: a number too long to read") from None
    for name in data:
        if name not in SECTIONS:
            hint = difflib.get_close_matches(name, SECTIONS, n=1)
            suggestion = f' (did you mean "[{hint[0]}]"?)' if hint else ""
            raise ConfigError(f'{source}: unknown section "[{name}]"{suggestion}')
    say = warn or (lambda message: warnings.warn(message, stacklevel=2))
    api = _load_api(Section("api", data.get("api", {}), source), env, say, path, need_secrets)
    quota = _load_quota(Section("quota", data.get("quota", {}), source))
    harvest = _load_harvest(Section("harvest", data.get("harvest", {}), source))
    store = _load_store(Section("store", data.get("store", {}), source), path)
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


def _secret_from_env(
    section: Section, key: str, env: Mapping[str, str], need: bool = True
) -> Secret | None:
    variable = section.get(key, str, None)
    if variable is None:
        return None
    if not ENV_NAME_PATTERN.match(variable):
        raise ConfigError(
            f"{section.where(key)}: must name an environment variable (letters, digits, "
            "underscore), not hold the secret itself"
        )
    # "hunter2" is a valid name too: quote only a conventional (capitals) one
    shown = (
        f"environment variable {variable}"
        if ENV_NAME_SHOWN.match(variable)
        else "the environment variable it names (name not shown: not in capitals, it may be "
        "the secret itself)"
    )
    value = env.get(variable)
    if not value and not need:
        return None
    if value is None:
        raise ConfigError(f"{section.where(key)}: {shown} is not set")
    if not value:
        raise ConfigError(f"{section.where(key)}: {shown} is set but empty")
    return Secret(value)


def _load_api(
    s: Section, env: Mapping[str, str], warn: Callable[[str], None], path: Path, need_secrets: bool
) -> ApiConfig:
    base_url = s.get("base_url", str, DEFAULT_BASE_URL).rstrip("/")
    if "@" in re.split(r"[/?#]", base_url.split("://", 1)[-1], maxsplit=1)[0]:
        # user:password@host, or a scheme-less one urlsplit cannot see: never echo it back
        raise ConfigError(f"{s.where('base_url')}: must not contain credentials (user:pass@)")
    _check_base_url(base_url, s.where("base_url"))
    login = s.get("login", str, None)
    password = _secret_from_env(s, "password_env", env, need_secrets)
    inline = s.get("password", str, None)
    if inline is not None:
        if password is not None:
            raise ConfigError(f"{s.where('password')}: give password or password_env, not both")
        password = Secret(inline)
        warn(f"{s.source}: [api] password is written in the file; prefer password_env")
        _warn_if_readable_by_others(path, warn)
    tool = s.get("tool", str, None)
    account_login = s.get("account_login", str, None)
    account_password = _secret_from_env(s, "account_password_env", env, need_secrets)
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
    for key, value in (("login", login), ("account_login", account_login)):
        if value is not None and not value.strip():  # else 401s, and exit 3 for a typo
            raise ConfigError(f"{s.where(key)}: must not be empty")
    if tool is not None and tool not in TOOLS:
        raise ConfigError(f"{s.where('tool')}: must be one of {', '.join(TOOLS)}, got {tool!r}")
    if account_login is not None:
        if account_password is None and need_secrets:
            raise ConfigError(
                f"{s.where('account_password_env')}: required with account_login "
                "(or account_password in the file)"
            )
        if tool is None:
            raise ConfigError(f"{s.where('tool')}: required with account_login")
    concurrency = s.positive("concurrency", ApiConfig.concurrency, MAX_CONCURRENCY)
    timeout = s.seconds("timeout_seconds", ApiConfig.timeout_seconds, MAX_TIMEOUT_SECONDS)
    max_attempts = s.positive("max_attempts", ApiConfig.max_attempts, MAX_ATTEMPTS)
    max_reply_bytes = s.positive("max_reply_bytes", ApiConfig.max_reply_bytes, MAX_REPLY_BYTES)
    ca_bundle = _ca_bundle(s, path)
    s.check_unknown()
    if login is not None and password is None and need_secrets:
        raise ConfigError(
            f"{s.where('password_env')}: required with login (or password in the file)"
        )
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


def _check_base_url(base_url: str, where: str) -> None:
    """An http(s) URL the HTTP client can send to; said here, before anything is sent (the
    client itself would only fail at the first request, with a traceback)."""
    try:
        parts = urlsplit(base_url)
        port = parts.port  # parsed lazily: "Port out of range 0-65535", not an integer, ...
    except ValueError as exc:  # also "Invalid IPv6 URL" for an unclosed [
        raise ConfigError(f"{where}: not a valid URL ({exc}): {base_url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{where}: must be an http(s) URL with a host, "
            f"e.g. {DEFAULT_BASE_URL!r}, got {base_url!r}"
        )
    if port == 0:
        raise ConfigError(f"{where}: port 0 is not a port one can connect to: {base_url!r}")
    if any(c.isspace() or not c.isprintable() for c in base_url):
        raise ConfigError(f"{where}: must not contain spaces or control characters")


def _ca_bundle(s: Section, config_path: Path) -> Path | None:
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


def _load_quota(s: Section) -> QuotaConfig:
    limit = s.positive("limit", QuotaConfig.limit, MAX_LIMIT)
    window = s.seconds("window_seconds", QuotaConfig.window_seconds, MAX_WINDOW_SECONDS)
    reserve = s.positive("reserve", QuotaConfig.reserve, MAX_LIMIT, zero_ok=True)
    s.check_unknown()
    if reserve >= limit:
        raise ConfigError(f"{s.where('reserve')}: must be less than limit ({limit})")
    return QuotaConfig(limit=limit, window_seconds=window, reserve=reserve)


def _load_harvest(s: Section) -> HarvestConfig:
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
    lookback = s.positive(
        "lookback_days", HarvestConfig.lookback_days, MAX_LOOKBACK_DAYS, zero_ok=True
    )
    economy = s.get("economy", str, HarvestConfig.economy)
    if economy not in ECONOMY_MODES:
        raise ConfigError(f"{s.where('economy')}: must be auto or off, got {economy!r}")
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
        economy=economy,
    )


def _load_store(s: Section, config_path: Path) -> StoreConfig:
    raw_path = s.get("path", str, str(StoreConfig.path))
    if not raw_path.strip():
        raise ConfigError(f"{s.where('path')}: must not be empty")
    from harvester.store.location import object_url

    # Relative to the config file's folder, so cron jobs work whatever their working directory;
    # an object-storage URL (s3://, gs://, az://) is kept as it is (see harvester.store.location)
    url = object_url(raw_path.strip())
    scheme = _SCHEME.match(raw_path.strip())
    if url is None and scheme is not None:
        # not a folder name: a URL delta-rs cannot use (no bucket, another scheme); never
        # echoed whole, since it may hold credentials
        raise ConfigError(
            f"{s.where('path')}: {scheme[0]} is not a store location: give a folder, or "
            "s3://bucket/prefix (gs://, az:// likewise)"
        )
    if url is not None and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        # never echo it: the part before '@' is a secret
        raise ConfigError(
            f"{s.where('path')}: the URL must not hold credentials; set them in the standard "
            "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY...)"
        )
    path = Path(url) if url else Path(raw_path).expanduser()
    if url is None and not path.is_absolute():
        path = config_path.parent / path
    flush_jobs = s.positive("flush_jobs", StoreConfig.flush_jobs, MAX_FLUSH_JOBS)
    flush_seconds = s.seconds("flush_seconds", StoreConfig.flush_seconds, MAX_FLUSH_SECONDS)
    auto_compact = s.get("auto_compact", bool, StoreConfig.auto_compact)
    s.check_unknown()
    return StoreConfig(
        path=path, flush_jobs=flush_jobs, flush_seconds=flush_seconds, auto_compact=auto_compact
    )
