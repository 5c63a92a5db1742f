"""Flask CLI commands for operators: ``migrate``, ``rebuild-latest``, ``rollups rebuild`` (``flask --app web ...``)."""

from __future__ import annotations

import json
import time

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from common.database import connect, release
from web.latest import rebuild_latest


@click.command("migrate")
@with_appcontext
def migrate_command() -> None:
    """Create the database if missing, apply migrations and create the partitions."""
    result = release(current_app.config["SETTINGS"])
    click.echo(json.dumps(result))


@click.command("rebuild-latest")
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1, 100_000),
              help="Readings refilled per Redis round trip.")
@with_appcontext
def rebuild_latest_command(batch_size: int) -> None:
    """Rebuild the Redis latest state from Postgres *_latest (after Redis lost its data); never moves a hash back."""
    with connect(current_app.config["SETTINGS"]) as conn:
        result = rebuild_latest(conn, current_app.extensions["latest_state"], batch_size)
    click.echo(json.dumps(result))


@click.group("rollups")
def rollups_group() -> None:
    """The hourly rollups of the fleet analytics (docs/fleet-analytics.md)."""


@rollups_group.command("rebuild")
@click.option("--from", "first_day", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="First UTC day to rebuild (YYYY-MM-DD).")
@click.option("--to", "last_day", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Last UTC day to rebuild, included (YYYY-MM-DD).")
@with_appcontext
def rollups_rebuild_command(first_day, last_day) -> None:
    """Recompute the rollups of the days --from .. --to from raw history; on a correct range it changes nothing."""
    from scheduler.rollups import rebuild

    if last_day < first_day:
        raise click.BadParameter("--to must not be before --from", param_hint="--to")
    started = time.monotonic()
    result = rebuild(current_app.config["SETTINGS"], first_day.date(), last_day.date())
    result["seconds"] = round(time.monotonic() - started, 1)
    click.echo(json.dumps(result))


def init_app(app: Flask) -> None:
    """Register the commands on ``app``."""
    app.cli.add_command(migrate_command)
    app.cli.add_command(rebuild_latest_command)
    app.cli.add_command(rollups_group)
