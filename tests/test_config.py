"""Config loading: the contract's keys work as written; every bad value is one clear error."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from harvester.config import Secret, load_config
from harvester.errors import ConfigError
from harvester.jobs import Grain

CONTRACT_EXAMPLE = """
[api]
base_url = "https://voicetrends.plumvoice.com/api"
login = "0123456789abcdef0123456789abcdef"
password_env = "VOICETRENDS_PASSWORD"
concurrency = 4
timeout_seconds = 120

[quota]
limit = 150
window_seconds = 900
reserve = 0

[harvest]
phones = ["6175550101", "ALL"]
start = 2024-01-01
end = "yesterday"
window = "day"
lookback_days = 3

[store]
path = "voicetrends-data"
"""

ENV = {"VOICETRENDS_PASSWORD": "s3cret-pass"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_contract_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CONTRACT_EXAMPLE), env=ENV)
    assert config.api.login == "0123456789abcdef0123456789abcdef"
    assert config.api.password == Secret("s3cret-pass")
    assert config.quota.limit == 150 and config.quota.window_seconds == 900
    assert config.harvest.phones == ("6175550101", "ALL")
    assert config.harvest.start == dt.date(2024, 1, 1)
    assert config.harvest.end == "yesterday"
    assert config.harvest.window is Grain.DAY
    assert config.store.path == tmp_path / "voicetrends-data"


def test_example_config_file_in_repo_loads(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    text = (repo / "config.example.toml").read_text()
    config = load_config(write(tmp_path, text), env=ENV)
    assert config.harvest.phones


def test_secret_never_shows_in_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CONTRACT_EXAMPLE), env=ENV)
    assert "s3cret-pass" not in repr(config)
    assert "s3cret-pass" not in str(config.api)


def test_inline_password_is_accepted_with_a_warning(tmp_path: Path) -> None:
    text = CONTRACT_EXAMPLE.replace(
        'password_env = "VOICETRENDS_PASSWORD"', 'password = "inline-pw"'
    )
    path = write(tmp_path, text)
    path.chmod(0o644)
    warnings: list[str] = []
    config = load_config(path, env={}, warn=warnings.append)
    assert config.api.password == Secret("inline-pw")
    assert any("password_env" in w for w in warnings)
    assert any("readable by other users" in w for w in warnings)
    assert all("inline-pw" not in w for w in warnings)


def test_account_credentials(tmp_path: Path) -> None:
    text = CONTRACT_EXAMPLE.replace(
        'login = "0123456789abcdef0123456789abcdef"\npassword_env = "VOICETRENDS_PASSWORD"',
        'tool = "dev"\naccount_login = "me@example.com"\naccount_password_env = "ACCT"',
    )
    config = load_config(write(tmp_path, text), env={"ACCT": "acct-pw"})
    assert config.api.uses_account and config.api.account_password == Secret("acct-pw")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "concurrency = 4",
            "concurency = 4",
            'unknown key "concurency" (did you mean "concurrency"?)',
        ),
        ("[quota]", "[quotas]", 'unknown section "[quotas]" (did you mean "[quota]"?)'),
        ("concurrency = 4", "concurrency = 0", "[api] concurrency: must be at least 1"),
        ("concurrency = 4", 'concurrency = "4"', "[api] concurrency: expected an integer"),
        ("limit = 150", "limit = -1", "[quota] limit: must be at least 1"),
        ("reserve = 0", "reserve = 150", "[quota] reserve: must be less than limit"),
        ("start = 2024-01-01", 'start = "2024-02-30"', "[harvest] start: not a valid date"),
        ('window = "day"', 'window = "fortnight"', "[harvest] window: must be day, week or month"),
        ('phones = ["6175550101", "ALL"]', "phones = []", "[harvest] phones: expected a non-empty"),
        ('phones = ["6175550101", "ALL"]', 'phones = ["617-555"]', "is not a phone number"),
        ('phones = ["6175550101", "ALL"]', 'phones = ["1234", "1234"]', "listed twice"),
        (
            'base_url = "https://voicetrends.plumvoice.com/api"',
            'base_url = "voicetrends.plumvoice.com/api"',
            "[api] base_url: must be an http(s) URL",
        ),
        (
            'end = "yesterday"',
            "end = 2023-01-01",
            "[harvest] start: 2024-01-01 is after end 2023-01-01",
        ),
        ("lookback_days = 3", "lookback_days = -2", "[harvest] lookback_days: must be 0 or more"),
        (
            "timeout_seconds = 120",
            "timeout_seconds = 0",
            "[api] timeout_seconds: must be a number of seconds above 0",
        ),
        ("[store]", "[store]\nflush_jobs = true", "[store] flush_jobs: expected an integer"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in CONTRACT_EXAMPLE
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, CONTRACT_EXAMPLE.replace(old, new)), env=ENV)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_password_variable(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"password_env: environment variable VOICETRENDS_PASSWORD is not set"
    ):
        load_config(write(tmp_path, CONTRACT_EXAMPLE), env={})


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found$"):  # no CLI flag named
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"not found \(ask for config\.toml\)$"):
        load_config(tmp_path / "nope.toml", missing_hint="ask for config.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)  # a directory
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[api\nx=1"))


def test_a_utf8_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    """Windows editors put one at the top; tomllib alone calls it "Invalid statement"."""
    plain = load_config(write(tmp_path, CONTRACT_EXAMPLE), env=ENV)
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf" + CONTRACT_EXAMPLE.encode())
    assert load_config(path, env=ENV) == plain


def test_an_empty_password_variable_is_called_empty_not_unset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, CONTRACT_EXAMPLE), env={"VOICETRENDS_PASSWORD": ""})
    assert str(err.value).endswith(
        "password_env: environment variable VOICETRENDS_PASSWORD is set but empty"
    )


@pytest.mark.parametrize("pasted", ["hunter2", "Sekret42", "hunter2-Sekret!", "pass word"])
@pytest.mark.parametrize("key", ["password_env", "account_password_env"])
def test_a_password_pasted_into_an_env_key_is_never_echoed(
    tmp_path: Path, pasted: str, key: str
) -> None:
    text = CONTRACT_EXAMPLE
    if key == "account_password_env":
        text = text.replace(
            'login = "0123456789abcdef0123456789abcdef"\npassword_env = "VOICETRENDS_PASSWORD"',
            'tool = "dev"\naccount_login = "me@example.com"',
        )
    text = text.replace("[api]\n", f'[api]\n{key} = "{pasted}"\n', 1)
    if key == "password_env":
        text = text.replace('password_env = "VOICETRENDS_PASSWORD"\n', "")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env=ENV)
    message = str(err.value)
    assert f"[api] {key}:" in message and pasted not in message
    assert "not set" in message or "must name an environment variable" in message


@pytest.mark.parametrize(
    ("key", "most"),
    [
        ("concurrency", 256),
        ("max_attempts", 100),
        ("limit", 10**9),
        ("lookback_days", 366),
        ("flush_jobs", 100_000),
        ("timeout_seconds", 3600),
        ("window_seconds", 86_400),
        ("flush_seconds", 3600),
    ],
)
def test_numeric_keys_have_documented_upper_bounds(tmp_path: Path, key: str, most: int) -> None:
    """The bound itself is accepted, one above it is not; each bound is in the example config."""
    section = {
        "concurrency": "api",
        "max_attempts": "api",
        "timeout_seconds": "api",
        "limit": "quota",
        "window_seconds": "quota",
        "lookback_days": "harvest",
        "flush_jobs": "store",
        "flush_seconds": "store",
    }[key]

    def with_value(value: object) -> Path:
        lines = [line for line in CONTRACT_EXAMPLE.splitlines() if not line.startswith(key)]
        text = "\n".join(lines).replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n")
        return write(tmp_path, text)

    config = load_config(with_value(most), env=ENV)
    found = {getattr(part, key, None) for part in (config.api, config.quota, config.harvest)}
    assert most in found | {getattr(config.store, key, None)}
    seconds = key.endswith("_seconds")
    for bad in (most + 1, 2**63 - 1, *(("inf", "nan", "-inf") if seconds else ())):
        with pytest.raises(ConfigError, match=rf"\[{section}\] {key}: must be .*at most"):
            load_config(with_value(bad), env=ENV)
    if not seconds:  # inf is no integer: said as such
        with pytest.raises(ConfigError, match=rf"\[{section}\] {key}: expected an integer"):
            load_config(with_value("inf"), env=ENV)
    repo = Path(__file__).resolve().parent.parent
    example = (repo / "config.example.toml").read_text()
    assert f"at most {most}" in example or f"at most {most:_}" in example


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [("start", "1900-01-01", "1899-12-31"), ("end", "2999-12-31", "3000-01-01")],
)
def test_dates_stay_inside_the_documented_range(
    tmp_path: Path, key: str, good: str, bad: str
) -> None:
    def with_date(value: str) -> Path:
        text = CONTRACT_EXAMPLE.replace("start = 2024-01-01", "start = 1900-01-01")
        old = "start = 1900-01-01" if key == "start" else 'end = "yesterday"'
        return write(tmp_path, text.replace(old, f"{key} = {value}"))

    assert load_config(with_date(good), env=ENV)
    with pytest.raises(ConfigError, match=rf"\[harvest\] {key}: {bad} is outside the dates"):
        load_config(with_date(bad), env=ENV)
