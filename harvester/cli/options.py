"""What every command shares: the object the group hands its commands, the common options, and
flag values turned into library values (dates, output paths) with errors that name the flag.

It exists so that each command module reads as "options in, one library call out", and so the
group (:mod:`harvester.cli`) and its commands agree on one :class:`CliState` and one way of
parsing a flag.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from harvester.config import CONFIG_ENV, Config, default_config_path, load_config
from harvester.config_values import parse_date
from harvester.errors import ConfigError, UsageError
from harvester.logs import setup_logging

log = logging.getLogger("harvester")


class CliState:
    """What the group passes to its commands."""

    def __init__(self, config_path: Path | None, verbose: int, quiet: bool) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self.quiet = quiet

    def config(self, *, need_secrets: bool = True) -> Config:
        """The validated config; ``need_secrets=False`` for commands that send nothing."""
        path = self.config_path or default_config_path()
        config = load_config(
            path,
            warn=lambda message: log.warning("%s", message),
            missing_hint=f"use -c/--config or ${CONFIG_ENV}",
            need_secrets=need_secrets,
        )
        setup_logging(self.verbose, self.quiet, secrets=config.secrets())
        return config

    def store_path(self, store: Path | None) -> Path:
        """``--store DIR`` if given, else the config's ``store.path``."""
        if store is not None:
            return store
        config = self.config(need_secrets=False)  # reading or tidying a store sends nothing
        from harvester.store.location import object_url

        path = config.store.path
        if not object_url(path) and not path.exists():
            raise UsageError(
                f"{config.source}: [store] path: {path} does not exist (nothing harvested yet?)"
            )
        return path


def date_option(value: str | None, flag: str, *, relative: bool = False) -> dt.date | str | None:
    if value is None:
        return None
    if relative and value.strip().lower() in ("today", "yesterday"):
        return value.strip().lower()
    try:
        return parse_date(value, flag)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _config_option(name: str, **kwargs: Any) -> Callable[[Any], Any]:
    """``-c/--config FILE``, stored under ``name``."""
    return click.option(
        "-c",
        "--config",
        name,
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Config file (default: $HARVESTER_CONFIG or ./config.toml).",
        **kwargs,
    )


config_option = _config_option("config_path")
store_option = click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Store folder to read instead of the config's store.path.",
)
range_options: list[Callable[[Any], Any]] = [
    click.option("--start", help="First day, YYYY-MM-DD (default: harvest.start)."),
    click.option(
        "--end", help="Last day, YYYY-MM-DD, 'yesterday' or 'today' (default: harvest.end)."
    ),
    click.option(
        "--phones", help="Comma-separated phone numbers and/or ALL (default: harvest.phones)."
    ),
    click.option(
        "--today", help="Treat this YYYY-MM-DD as today (reproducible runs, back-dated syncs)."
    ),
    click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary."),
]


def with_options(options: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _subcommand_config_option(func: Any) -> Any:
    """Let ``-c`` also be given after the command name (``harvester pull -c x.toml``)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
        if value is not None:
            ctx.find_object(CliState).config_path = value  # type: ignore[union-attr]

    return _config_option("_config", expose_value=False, callback=callback, is_eager=True)(func)


def _verbosity_options(func: Any) -> Any:
    def verbose_cb(ctx: click.Context, _param: click.Parameter, value: int) -> None:
        obj = ctx.find_object(CliState)
        if obj is not None and value:
            obj.verbose = max(obj.verbose, value)
            setup_logging(obj.verbose, obj.quiet)

    def quiet_cb(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        obj = ctx.find_object(CliState)
        if obj is not None and value:
            obj.quiet = True
            setup_logging(obj.verbose, obj.quiet)

    func = click.option(
        "-v",
        "--verbose",
        "_v",
        count=True,
        expose_value=False,
        callback=verbose_cb,
        help="More log output.",
    )(func)
    return click.option(
        "-q",
        "--quiet",
        "_q",
        is_flag=True,
        expose_value=False,
        callback=quiet_cb,
        help="Only errors.",
    )(func)


def command(*args: Any, read_only: bool = False, **kwargs: Any) -> Callable[[Any], Any]:
    """A subcommand that also accepts -c/-v/-q after its name; :mod:`harvester.cli` adds it to
    the group. A ``read_only`` command opens each table of the store once and reuses it
    (:func:`harvester.store.opening.cached_reads`): it lists a table up to a dozen times."""

    def decorate(func: Any) -> Any:
        if read_only:
            func = _with_cached_reads(func)
        return click.command(*args, **kwargs)(_verbosity_options(_subcommand_config_option(func)))

    return decorate


def _with_cached_reads(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        from harvester.store.opening import cached_reads

        with cached_reads():
            return func(*args, **kwargs)

    return run
