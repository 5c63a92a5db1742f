"""Readable logs: LOG_FORMAT=auto, the text format's fields, RQ's chatter at DEBUG, the periodic ingest summary."""

from __future__ import annotations

import io
import logging

import fakeredis
import pytest

from common import metrics
from common.logging import JsonFormatter, TextFormatter, formatter_for, rq_log_level
from common.settings import Settings
from scheduler.summary import IngestSummary


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere():
    settings = Settings.from_env({})
    assert settings.log_format == "auto"
    assert settings.resolved_log_format(Terminal()) == "text"
    assert settings.resolved_log_format(io.StringIO()) == "json"
    assert Settings.from_env({"LOG_FORMAT": "json"}).resolved_log_format(Terminal()) == "json"
    assert isinstance(formatter_for("web", Settings.from_env({"LOG_FORMAT": "text"})), TextFormatter)
    assert isinstance(formatter_for("web", Settings.from_env({"LOG_FORMAT": "json"})), JsonFormatter)


def test_the_text_format_keeps_the_fields():
    record = logging.LogRecord("web.request", logging.INFO, "", 0, "request", (), None)
    record.status, record.route, record.note = 404, "/v1/meters/<meter_id>/latest", "two words"
    line = TextFormatter("web").format(record)
    assert line.endswith('INFO    web.request: request  status=404 route=/v1/meters/<meter_id>/latest note="two words"')


@pytest.mark.parametrize(("level", "rq_level"), [("DEBUG", "DEBUG"), ("INFO", "WARNING"), ("ERROR", "ERROR")])
def test_rq_per_job_lines_show_only_at_debug(level, rq_level):
    assert rq_log_level(Settings.from_env({"LOG_LEVEL": level})) == rq_level


def test_the_summary_says_what_moved_and_stays_quiet_while_idle(caplog):
    client = fakeredis.FakeRedis()
    summary = IngestSummary(client, interval=10)
    caplog.set_level(logging.INFO, logger="summary")
    assert summary.tick(now=1000.0) is None  # the baseline
    metrics.incr(client, "readings_accepted", 50, "meter")
    metrics.incr(client, "readings_accepted", 30, "vehicle")
    metrics.incr(client, "readings_rejected", 2, "meter", "invalid")
    metrics.incr(client, "rows_written", 80)
    assert summary.tick(now=1005.0) is None  # not yet 10 s
    fields = summary.tick(now=1010.0)
    assert fields["accepted"] == 80 and fields["rejected"] == 2
    assert (fields["accepted_per_s"], fields["rejected_per_s"], fields["written_per_s"]) == (8.0, 0.2, 8.0)
    assert fields["backlog"] == 0 and fields["drain_lag_seconds"] == 0.0
    [record] = [r for r in caplog.records if r.name == "summary"]
    assert record.getMessage() == "ingest summary" and record.accepted == 80
    assert summary.tick(now=1020.0) is None  # nothing moved: no line
    assert len([r for r in caplog.records if r.name == "summary"]) == 1


def test_a_zero_interval_turns_the_summary_off():
    assert IngestSummary(fakeredis.FakeRedis(), interval=0).tick(now=1.0) is None
