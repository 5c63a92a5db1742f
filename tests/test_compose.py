"""docker-compose.yml, Dockerfile and Procfile agree (no Docker engine runs here: the files are read)."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from tests.processes import ROOT, procfile_commands

APP_SERVICES = {"release", "web", "worker", "rollups", "scheduler"}


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
    assert set(compose["services"]) == {"postgres", "redis", "nginx", *APP_SERVICES}


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
        assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/\d+", env["REDIS_URL"])


def test_servers_are_the_agreed_versions_with_durable_redis(compose):
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7"
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    # Bounded and closed: a password, a memory cap, and refusal (not eviction) when full.
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert command[command.index("--maxmemory") + 1].startswith("${REDIS_MAXMEMORY:-")
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


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


def _interpolated_names(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


def test_nginx_is_the_only_published_port_on_loopback_by_default(compose):
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"nginx"}
    nginx = compose["services"]["nginx"]
    assert nginx["image"].split(":")[0] == "nginx"  # the official image
    (port,) = nginx["ports"]
    assert port.startswith("${EDGE_BIND:-127.0.0.1}:")
    assert port.endswith(":" + nginx["environment"]["NGINX_PORT"])
    # The same config file the tests run (tests/test_edge.py), rendered by the image's envsubst.
    assert "./deploy/nginx.conf:/etc/nginx/templates/nginx.conf.template:ro" in nginx["volumes"]
    assert nginx["environment"]["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    assert nginx["environment"]["WEB_UPSTREAM"] == f"web:{compose['services']['web']['environment']['PORT']}"
    assert nginx["depends_on"]["web"]["condition"] == "service_healthy"


def test_the_template_variables_are_the_ones_compose_gives_nginx(compose):
    from tests.edge import NGINX_CONF, TEMPLATE_VARIABLES

    assert _interpolated_names(NGINX_CONF.read_text()) == set(TEMPLATE_VARIABLES)
    env = compose["services"]["nginx"]["environment"]
    assert set(TEMPLATE_VARIABLES) <= set(env)
    assert all(re.search(rf"\b{name}\b", env["NGINX_ENVSUBST_FILTER"]) for name in TEMPLATE_VARIABLES)


def test_the_app_trusts_one_proxy_hop_and_binds_for_nginx(compose):
    web = compose["services"]["web"]["environment"]
    assert web["TRUSTED_PROXY_HOPS"] == "1"
    assert web["WEB_HOST"] == "0.0.0.0"


def test_no_password_is_written_in_compose_and_env_example_names_every_variable(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    services = compose["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "energy:energy@" not in text
    assert ":${POSTGRES_PASSWORD:?" in services["web"]["environment"]["DATABASE_URL"]
    example = (ROOT / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    assert _interpolated_names(text) <= names
    # The example leaves the secrets empty: compose's ${VAR:?} refuses to start until they are set.
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.M) and re.search(r"^REDIS_PASSWORD=$", example, re.M)
    assert ".env" in (ROOT / ".gitignore").read_text().split()
