"""Flask CLI commands for operators: ``flask --app web migrate``."""

from __future__ import annotations

import json

import click
from flask import Flask, current_app

from common.database import release


@click.command("migrate")
def migrate_command() -> None:
    """Create the database if missing, apply migrations and create the partitions."""
    result = release(current_app.config["SETTINGS"])
    click.echo(json.dumps(result))


def init_app(app: Flask) -> None:
    """Register the commands on ``app``."""
    app.cli.add_command(migrate_command)
