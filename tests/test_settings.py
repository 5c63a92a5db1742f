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
