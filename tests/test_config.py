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
            "[api] timeout_seconds: must be a positive",
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
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)  # a directory
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[api\nx=1"))
