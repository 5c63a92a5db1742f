"""A small keep-alive HTTP client on the standard library, for the load client and the hostile-input test."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass

# What a dropped, refused or reset connection looks like from http.client.
CONNECTION_ERRORS = (ConnectionError, http.client.HTTPException, socket.timeout, OSError)


@dataclass
class Response:
    """A complete answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class HttpClient:
    """One persistent connection to ``host:port``; reconnects on the next call after a failure."""

    def __init__(self, host: str, port: int, timeout: float = 15.0):
        self.host = host
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> Response:
        """Send one request and read the whole answer; raise one of CONNECTION_ERRORS on a transport failure."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            self._conn.request(method, path, body=body, headers=headers)
            answer = self._conn.getresponse()
            data = answer.read()
        except BaseException:
            self.close()
            raise
        if answer.will_close:
            self.close()
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post_json(self, path: str, payload) -> Response:
        return self.request("POST", path, json.dumps(payload).encode())
