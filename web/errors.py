"""JSON error answers: every 4xx/5xx the API gives is a JSON body, never HTML or a stack trace."""

from __future__ import annotations

import logging

import psycopg
import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer with a status, a machine-readable code and a sentence."""

    def __init__(self, status: int, error: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


def error_response(status: int, error: str, message: str, headers: dict | None = None, **extra):
    """Build a JSON error response."""
    body = {"error": error, "message": message, **extra}
    response = jsonify(body)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _http_error_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_")


def init_app(app: Flask) -> None:
    """Register the JSON error handlers on ``app``."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.error, exc.message, headers=exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"The request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes."
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(exc.code or 500, _http_error_code(exc), message, headers=headers)

    @app.errorhandler(redis.exceptions.RedisError)
    def _redis_down(exc: redis.exceptions.RedisError):
        log.warning("redis unavailable: %s", exc)
        return error_response(
            503, "redis_unavailable", "The state store is unavailable; retry shortly.", headers={"Retry-After": "1"}
        )

    @app.errorhandler(psycopg.OperationalError)
    def _postgres_down(exc: psycopg.OperationalError):
        log.warning("postgres unavailable: %s", exc)
        return error_response(
            503, "database_unavailable", "The database is unavailable; retry shortly.", headers={"Retry-After": "5"}
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "An unexpected error occurred; it has been logged.")
