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
