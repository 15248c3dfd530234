"""``harvester migrate``: convert a store of an older layout to the current one, in place."""

from __future__ import annotations

from pathlib import Path

import click

from harvester.cli.options import CliState, command, store_option


@command("migrate")
@store_option
@click.pass_obj
def migrate_cmd(obj: CliState, store: Path | None) -> None:
    """Convert a store written in the older layout (format 1) to Delta Lake tables, in place,
    after copying it to a backup folder beside it; the data is equal before and after.

    \b
    Example:
      harvester migrate --store ./voicetrends-data
    """
    from harvester.store.legacy import migrate_store

    click.echo(str(migrate_store(obj.store_path(store))))
