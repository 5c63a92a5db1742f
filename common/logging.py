"""One log line per event for every process (web, worker, scheduler): JSON lines, or readable text on a terminal.

A log call's ``extra={...}`` fields become keys of the line, so an event is logged as
``log.info("drained batch", extra={"batch_size": 5000, "rows": 4990})`` and can be queried by field;
the text format prints the same fields as ``key=value`` after the message.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from common.settings import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: ts, level, logger, process, msg, the extra fields, exc."""

    def __init__(self, process: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object on one line."""
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.process:
            line["process"] = self.process
        for key, value in _extra_fields(record):
            line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def _extra_fields(record: logging.LogRecord):
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
            yield key, value


class TextFormatter(logging.Formatter):
    """Format a record for a person: time, level, process/logger, message, then the extra fields as key=value."""

    def __init__(self, process: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        """Return ``HH:MM:SS.mmm LEVEL logger: message key=value ...`` (and the traceback, if any)."""
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(f"{key}={_text_value(value)}" for key, value in _extra_fields(record))
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _text_value(value) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return orjson.dumps(text).decode() if not text or " " in text else text


def formatter_for(process: str | None, settings: Settings) -> logging.Formatter:
    """Return the JSON or text formatter that LOG_FORMAT asks for (auto: text on a terminal)."""
    if settings.resolved_log_format() == "json":
        return JsonFormatter(process)
    return TextFormatter(process)


# RQ's own per-job and per-enqueue lines: routine chatter, shown only at LOG_LEVEL=DEBUG.
RQ_LOGGERS = ("rq.worker", "rq.job", "rq.cron", "rq.scheduler", "rq.queue")


def skip_unused_record_fields() -> None:
    """Stop logging from filling in per record what no format here prints (caller frame, thread, process names).

    These are the switches of the logging HOWTO's "Optimization" section; they cut a request-log
    line from ~25 to ~17 us on this machine.
    """
    logging._srcfile = None  # no sys._getframe() walk to find the caller's file and line
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def configure_logging(process: str, settings: Settings | None = None) -> None:
    """Send every logger's records to stdout, one line each in the LOG_FORMAT's format."""
    settings = settings or Settings.from_env()
    skip_unused_record_fields()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter_for(process, settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # RQ adds its own coloured text handlers unless a handler is already in place; route its
    # loggers to the root handler instead, and keep their per-job lines for DEBUG.
    for name in RQ_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.setLevel(rq_log_level(settings))


def rq_log_level(settings: Settings) -> str:
    """Return the level for RQ's loggers: DEBUG shows its per-job lines, anything else only its warnings."""
    return "DEBUG" if settings.log_level == "DEBUG" else max(settings.log_level, "WARNING", key=logging.getLevelName)
