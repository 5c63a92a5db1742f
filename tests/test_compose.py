"""docker-compose.yml, Dockerfile and Procfile agree (no Docker engine runs here: the files are read)."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from tests.processes import ROOT, procfile_commands

APP_SERVICES = {"release", "web", "worker", "scheduler"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def makefile_commands() -> list[list[str]]:
    """Return the recipe lines of the Makefile as argument lists, with $(BIN)/ prefixes removed."""
    out = []
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t"):
            text = re.sub(r"\$\(BIN\)/", "", line.strip())
            try:
                out.append(shlex.split(text))
            except ValueError:
                continue
    return out


def test_the_expected_services_exist(compose):
    assert set(compose["services"]) == {"postgres", "redis", *APP_SERVICES}


def test_every_app_service_runs_a_command_of_the_procfile_or_makefile(compose):
    known = [shlex.split(c) for c in procfile_commands().values()] + makefile_commands()
    for name in APP_SERVICES:
        command = compose["services"][name]["command"]
        command = shlex.split(command) if isinstance(command, str) else command
        assert any(command == k[: len(command)] and len(command) == len(k) for k in known), (name, command)
    # And each Procfile process type is in compose under the same name.
    assert set(procfile_commands()) == APP_SERVICES


def test_app_services_share_the_image_built_by_the_dockerfile(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert "pip install -r requirements.txt" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    assert yaml.safe_load(cmd) == shlex.split(procfile_commands()["web"])
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["build"] == "."
        assert service["image"] == "energy-engine:latest"
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379/")


def test_servers_are_the_agreed_versions_with_durable_redis(compose):
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7"
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_healthchecks_and_start_order(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "web"):
        assert services[name]["healthcheck"]["test"], name
    assert services["release"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["release"]["restart"] == "no"  # one-shot
    for name in ("web", "worker", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["release"]["condition"] == "service_completed_successfully"
    # web's health is /healthz, not /readyz: ingest must go on while Postgres is down.
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])


def test_the_worker_can_be_scaled_and_stops_gracefully(compose):
    worker = compose["services"]["worker"]
    # `--scale worker=N` needs no fixed container name and no published port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["init"] is True
    assert int(worker["stop_grace_period"].rstrip("s")) > 8  # DrainWorker.imminent_shutdown_delay
    assert int(compose["services"]["web"]["stop_grace_period"].rstrip("s")) > 20  # gunicorn graceful_timeout


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)
