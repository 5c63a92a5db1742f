"""Settings come from the environment, with defaults for the local servers."""

import pytest

from common.settings import Settings, SettingsError


def test_defaults_point_at_local_servers():
    s = Settings.from_env({})
    assert s.database_url == "postgresql://127.0.0.1:5432/energy"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.port, s.retention_days, s.partition_premake_days) == (8000, 90, 7)
    assert (s.max_clock_skew_seconds, s.max_readings_per_request) == (300, 5000)


def test_heroku_style_postgres_url_is_accepted():
    s = Settings.from_env({"DATABASE_URL": "postgres://u:p@db.example:5433/fleet?sslmode=require"})
    assert s.database_url == "postgresql://u:p@db.example:5433/fleet?sslmode=require"


def test_values_are_read_from_the_environment():
    s = Settings.from_env({"PORT": "9000", "RETENTION_DAYS": "30", "DRAIN_BATCH_SIZE": "250"})
    assert (s.port, s.retention_days, s.drain_batch_size) == (9000, 30, 250)


@pytest.mark.parametrize(("name", "value"), [("PORT", "http"), ("RETENTION_DAYS", "0"), ("DRAIN_BATCH_SIZE", "-1")])
def test_bad_values_fail_loudly_with_the_variable_name(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_rediss_urls_get_the_documented_certificate_settings(tmp_path):
    from common.redis_clients import data_client, rq_client

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = Settings.from_env({"REDIS_URL": "rediss://:secret@redis.example:6380/0", "REDIS_SSL_CERT_REQS": "none",
                           "REDIS_SSL_CA_CERTS": str(ca)})
    for client in (data_client(s), rq_client(s)):
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"]) == ("none", str(ca))
    plain = data_client(Settings.from_env({}))
    assert "ssl_cert_reqs" not in plain.connection_pool.connection_kwargs


@pytest.mark.parametrize(("env", "name"), [
    ({"REDIS_SSL_CERT_REQS": "maybe"}, "REDIS_SSL_CERT_REQS"),
    ({"REDIS_SSL_CA_CERTS": "/nonexistent/ca.pem"}, "REDIS_SSL_CA_CERTS"),
    ({"DB_POOL_MIN_SIZE": "5", "DB_POOL_MAX_SIZE": "2"}, "DB_POOL_MIN_SIZE"),
    ({"WEB_WORKER_CLASS": "eventlet"}, "WEB_WORKER_CLASS"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
])
def test_new_settings_are_validated_with_the_variable_named(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_gunicorn_and_the_pool_read_their_settings_from_the_environment(monkeypatch):
    import importlib.util
    from pathlib import Path

    env = {"WEB_CONCURRENCY": "3", "WEB_THREADS": "8", "WEB_TIMEOUT": "7", "PORT": "9123", "WEB_HOST": "0.0.0.0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
    spec = importlib.util.spec_from_file_location("gunicorn_conf_settings_test", path)
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    assert (conf.workers, conf.threads, conf.timeout, conf.bind) == (3, 8, 7, "0.0.0.0:9123")
    monkeypatch.setenv("WEB_THREADS", "many")
    with pytest.raises(SettingsError, match="WEB_THREADS"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))

    from web import create_app

    app = create_app(Settings.from_env({"DB_POOL_MAX_SIZE": "9", "DB_POOL_TIMEOUT": "1.5"}))
    assert (app.config["DB_POOL_MAX_SIZE"], app.config["DB_POOL_TIMEOUT"]) == (9, 1.5)
