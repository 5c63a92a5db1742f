"""gunicorn.conf.py: the settings the web process runs with."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
from gunicorn.config import Config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_logging():
    """Put back the loggers that the gunicorn logging config replaces."""
    names = ("", "gunicorn.error", "gunicorn.access")
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
             for n in names}
    yield
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@pytest.fixture
def conf():
    return load_conf()


def load_conf():
    """Execute gunicorn.conf.py afresh (it reads the environment at import) and return it as a module."""
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", ROOT / "gunicorn.conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logger(conf, access_level: str):
    cfg = Config()
    cfg.set("logger_class", conf.logger_class)
    logconfig = {**conf.logconfig_dict, "loggers": {**conf.logconfig_dict["loggers"]}}
    logconfig["loggers"]["gunicorn.access"] = {"level": access_level, "handlers": [], "propagate": False}
    cfg.set("logconfig_dict", logconfig)
    return cfg.logger_class(cfg)


def test_access_fields_are_not_built_when_the_access_logger_drops_the_line(conf, monkeypatch):
    logger = _logger(conf, "CRITICAL")
    built = []
    monkeypatch.setattr(logger, "atoms", lambda *args: built.append(args) or {})
    logger.access(object(), object(), {}, 0.001)
    assert built == []


def test_access_line_is_still_written_when_the_access_logger_takes_info(conf, monkeypatch):
    logger = _logger(conf, "INFO")
    built = []
    monkeypatch.setattr(logger, "atoms", lambda *args: built.append(args) or {})
    records = []
    monkeypatch.setattr(logger.access_log, "info", lambda *args: records.append(args))
    logger.access(object(), object(), {}, 0.001)
    assert len(built) == 1 and len(records) == 1
    assert logging.getLogger("gunicorn.access").isEnabledFor(logging.INFO)


def test_make_run_binds_loopback_and_a_setting_or_the_platform_changes_it(monkeypatch):
    for name in ("WEB_HOST", "DYNO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORT", "8123")
    assert load_conf().bind == "127.0.0.1:8123"
    monkeypatch.setenv("DYNO", "web.1")  # Heroku's router reaches the dyno from outside
    assert load_conf().bind == "0.0.0.0:8123"
    monkeypatch.setenv("WEB_HOST", "10.0.0.5")
    assert load_conf().bind == "10.0.0.5:8123"


def test_request_heads_are_bounded(conf):
    from gunicorn.http.message import MAX_REQUEST_LINE

    # Finite (0 means none, and the pure-Python parser is quadratic in the line's length).
    assert 0 < conf.limit_request_line <= MAX_REQUEST_LINE
    assert 0 < conf.limit_request_fields <= 100
    assert 0 < conf.limit_request_field_size <= 8190


def test_gunicorns_own_errors_are_json():
    import json
    import socket

    from gunicorn import util

    from web.gunicorn_errors import install_json_errors, write_json_error

    install_json_errors()
    assert util.write_error is write_json_error
    left, right = socket.socketpair()
    with left, right:
        util.write_error(left, 414, "URI Too Long", "Request Line is too large (9000 > 8190)")
        left.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := right.recv(4096):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"error": "request_uri_too_long",
                                 "message": "Request Line is too large (9000 > 8190)"}
