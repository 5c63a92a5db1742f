"""Flask CLI commands for operators: ``flask --app web migrate``, ``flask --app web rebuild-latest``."""

from __future__ import annotations

import json

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


def init_app(app: Flask) -> None:
    """Register the commands on ``app``."""
    app.cli.add_command(migrate_command)
    app.cli.add_command(rebuild_latest_command)
