"""gunicorn's own error answers (bad request line, too many headers...) as JSON in the API's error shape.

gunicorn answers what it refuses before the app sees it (414, 431, 400) with a small HTML page
written by ``gunicorn.util.write_error``; every worker class calls that function through the
module, so replacing it there is the one place where gunicorn lets us choose the body.
"""

from __future__ import annotations

import orjson
from gunicorn import util
from werkzeug.http import HTTP_STATUS_CODES

_MAX_MESSAGE = 200  # gunicorn's message may quote the refused line: keep the answer small


def error_code(status: int) -> str:
    """Return the API's error code for an HTTP status, as the app's handlers name it."""
    return HTTP_STATUS_CODES.get(status, "error").lower().replace(" ", "_")


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Write a complete JSON error response (then gunicorn closes the connection)."""
    body = orjson.dumps({"error": error_code(status_int), "message": (mesg or reason)[:_MAX_MESSAGE]})
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install_json_errors() -> None:
    """Make gunicorn answer its own errors with ``write_json_error``."""
    util.write_error = write_json_error
