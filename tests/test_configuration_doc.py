"""docs/configuration.md lists every setting of common/settings.py, with the code's defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| (.+?) \| .+\|$")
# Defaults that depend on the machine or are empty are described in words in the table.
DESCRIBED_IN_WORDS = {"WEB_CONCURRENCY": "2 x CPU cores", "REDIS_SSL_CA_CERTS": "(empty)", "CURSOR_SECRET": "(empty)",
                     "DATABASE_REPLICA_URL": "(empty)", "REDIS_CLUSTER_URL": "(empty)"}


def table() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_the_table_names_every_setting_and_nothing_else():
    names = {field.name.upper() for field in dataclasses.fields(Settings)}
    assert set(table()) == names


def test_every_setting_is_read_from_its_variable():
    source = (ROOT / "common" / "settings.py").read_text()
    for name in table():
        assert f'"{name}"' in source, f"{name} is in the table but common/settings.py never reads it"
        assert Settings.from_env({name: ""}) == Settings.from_env({}), f"an empty {name} must mean its default"


def test_the_table_shows_the_code_defaults():
    defaults = Settings()
    for name, shown in table().items():
        if name in DESCRIBED_IN_WORDS:
            assert shown == DESCRIBED_IN_WORDS[name]
            continue
        assert shown == f"`{getattr(defaults, name.lower())}`", name


def test_no_process_reads_the_environment_outside_settings():
    offenders = []
    folders = ("web", "workers", "scheduler", "common")
    code = [*ROOT.glob("*.py"), *(path for folder in folders for path in (ROOT / folder).glob("*.py"))]
    for path in code:
        if path.name != "settings.py" and re.search(r"os\.environ(\.get)?\(?\[?[\"']", path.read_text()):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
