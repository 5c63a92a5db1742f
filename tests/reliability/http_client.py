"""A small keep-alive HTTP client on the standard library, for the load client and the hostile-input test."""

from __future__ import annotations

import http.client
import io
import json
import select
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
    """One persistent connection to ``host:port``; reconnects on the next call after a failure.

    With a ``token``, every request sends it as ``Authorization: Bearer``, like any client of the API.
    """

    def __init__(self, host: str, port: int, timeout: float = 15.0, token: str | None = None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.token = token
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> Response:
        """Send one request and read the whole answer; raise one of CONNECTION_ERRORS on a transport failure.

        Like urllib3, a kept-alive connection that the server has closed meanwhile (gunicorn closes
        one idle for its keepalive seconds) is replaced before use, and a request that meets such a
        close before any answer arrives is sent once more on a new connection: the server never read it.
        """
        if self._conn is not None and _dropped(self._conn):
            self.close()
        reused = self._conn is not None
        try:
            return self._send(method, path, body, content_type)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
            return self._send(method, path, body, content_type)

    def _send(self, method: str, path: str, body: bytes | None, content_type: str) -> Response:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
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


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Tell whether the server closed an idle kept-alive connection (it reads as ready, with no data)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _Recorded:
    """A socket stand-in that replays bytes already received (for ``http.client.HTTPResponse``)."""

    def __init__(self, data: bytes):
        self._data = data

    def makefile(self, *args, **kwargs):
        return io.BytesIO(self._data)


def post_streaming(host: str, port: int, path: str, body: bytes, content_type: str = "application/json",
                   timeout: float = 60.0, chunk: int = 64 * 1024, token: str | None = None) -> Response:
    """POST a large body in chunks on a fresh connection, stopping as soon as the server answers.

    A server may answer (413) and close without reading a body over its limit; http.client would
    only see a broken pipe. Here the answer already received is read and parsed all the same.
    """
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{authorization}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < len(body) and not select.select([sock], [], [], 0)[0]:
                sent += sock.send(body[sent:sent + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading; its answer is what counts
        received = bytearray()
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass  # a reset after the answer: the bytes already read are complete or the parse fails
    answer = http.client.HTTPResponse(_Recorded(bytes(received)))
    answer.begin()
    return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
