"""Authentication and scopes: the one check every request passes, with the set of public endpoints beside it.

Every endpoint needs ``Authorization: Bearer <token>`` except PUBLIC_ENDPOINTS. A route's scope is
the one it declares with ``requires_scope``, else the default rule: GET/HEAD under /v1 need
``read``, anything else ``admin`` (``admin`` may do everything). A device key (bound to one
device) may only send that device's readings and read that device's latest state.

Keys are checked against an in-process cache (token hash -> principal, see KeyCache), so a
request of a known key costs no round trip. Revocation bumps a Redis version key that each
process polls at most once per AUTH_REVOCATION_POLL_MS; a change reloads the cache. Unknown
tokens are never cached; failed authentications are rate-limited per client address
(web/rate_limit.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
import redis
from flask import Flask, current_app, request

from common.database import load_sql
from common.settings import Settings
from common.streams import API_KEYS_VERSION_KEY, ID_FIELD, KIND_NAMES, METER, VEHICLE, Reading
from web import db, rate_limit
from web.errors import error_response

log = logging.getLogger(__name__)

# A token is ``eik_<id>_<secret>``: a prefix that secret scanners can match, the key's id (16 hex
# digits: the lookup is by primary key, then the hash is compared in constant time) and 43
# URL-safe characters of secret (256 random bits).
TOKEN_PREFIX = "eik_"
TOKEN_REGEX = re.compile(r"eik_([0-9a-f]{16})_[A-Za-z0-9_-]{43}\Z")
# Reachable without a key: liveness, the API's documentation (with Swagger UI's files) and the dashboard's page and
# static files (the page then reads the API with the key its user signs in with). Nothing else.
PUBLIC_ENDPOINTS = frozenset({"ops.healthz", "openapi.openapi_json", "openapi.docs", "openapi.swagger_ui_asset",
                              "dashboard.index", "static"})
# What a device key may reach: ingest (its own readings, checked by forbid_other_devices) and its
# own latest state (the view argument that names the device).
DEVICE_LATEST_ENDPOINTS = {"latest.vehicle_latest": (VEHICLE, "vehicle_id"),
                           "latest.meter_latest": (METER, "meter_id")}
# Ingest: a device key may reach it (its own readings, checked by forbid_other_devices), and its rate limit
# counts in the ingest script, not in Flask-Limiter (web/rate_limit.py).
INGEST_ENDPOINT = "telemetry.ingest"
PRINCIPAL_KEY = "energy.principal"  # in the WSGI environ: cheaper than flask.g
KEY_ID_KEY = "energy.key_id"  # what the request log names
_DEVICE_KINDS = {name: kind for kind, name in KIND_NAMES.items()}
_MISSING_MESSAGE = "This endpoint needs an API key: send Authorization: Bearer <token>."
# One sentence for every other failure: it must not tell an unknown key from a revoked or expired one.
_INVALID_MESSAGE = "The API key is not valid: it is unknown, revoked or expired, or the header is malformed."


def hash_token(token: str) -> str:
    """Return the stored form of a token (SHA-256, hex)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token() -> tuple[str, str]:
    """Return a fresh (key id, token)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def requires_scope(scope: str) -> Callable:
    """Declare the scope a view needs (instead of the default rule)."""

    def mark(view):
        view.required_scope = scope
        return view

    return mark


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id, its scopes, its device binding and its rate limit."""

    key_id: str
    scopes: frozenset[str]
    device: tuple[str, str] | None  # (kind: "m"/"v", device id)
    rate_limit: str | None
    expires_at: float | None  # Unix time
    loaded_at: float  # monotonic time the cache took it


class KeyCache:
    """A bounded map of token hash -> principal, kept fresh off the request path.

    Each process loads every usable key at once (one query: on its first request, after a
    revocation, and once per AUTH_CACHE_SECONDS), so a fleet's device keys are known before they
    call. A key created since is looked up once, then cached. A watcher thread reads the revocation
    version in Redis every AUTH_REVOCATION_POLL_MS and loads the cache anew when it moves; it also
    stamps the key ids seen as last used, once a minute, in one statement. A request only reads the
    dict; it polls itself only when the watcher is not running (the first request of a process, or
    after the process sat idle and the watcher stopped), so revocation holds without it.
    """

    TOUCH_SECONDS = 60.0
    # The watcher stops after this long without a request (an app that serves nothing polls nothing).
    IDLE_SECONDS = 60.0

    def __init__(self, app: Flask, settings: Settings):
        self._app = app  # its Redis client and Postgres pool (also outside a request, e.g. from the CLI)
        self._ttl = settings.auth_cache_seconds
        self._size = settings.auth_cache_size
        self._poll_seconds = settings.auth_revocation_poll_ms / 1000
        # A request polls when the last poll is older than this: the watcher is not polling.
        self._stale_seconds = 2 * self._poll_seconds
        self._entries: dict[str, Principal] = {}
        self._version: str | None = None
        self._polled_at = -1e9
        self._asked_at = -1e9
        self._loaded_at: float | None = None  # None: load on the next poll
        self._used: set[str] = set()
        self._touched_at = time.monotonic()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._watcher: threading.Thread | None = None

    def get(self, token_hash: str) -> Principal | None:
        """Return the cached principal of a token, or None (then the caller loads it)."""
        now = time.monotonic()
        self._asked_at = now
        if now - self._polled_at >= self._stale_seconds:
            self._poll_for_request(now)
        principal = self._entries.get(token_hash)
        if principal is None or now - principal.loaded_at > self._ttl:
            return None
        return principal

    def _poll_for_request(self, now: float) -> None:
        """Poll in the request (the watcher is not running) and start the watcher."""
        if self._pid != os.getpid():  # a forked child: the parent's watcher and lock are not ours
            self._pid, self._lock, self._watcher = os.getpid(), threading.Lock(), None
        if not self._lock.acquire(blocking=False):
            return  # someone is polling right now
        try:
            self._poll_locked(now)
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=_watch, args=(weakref.ref(self), self._poll_seconds),
                                                 name="key-cache-watcher", daemon=True)
                self._watcher.start()
        finally:
            self._lock.release()

    def poll(self, now: float | None = None) -> None:
        """Read the revocation version (one GET); reload when it moved or the load is old; stamp last use."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._poll_locked(now)

    def _poll_locked(self, now: float) -> None:
        self._polled_at = now
        try:
            version = self._app.extensions["redis"].get(API_KEYS_VERSION_KEY)
        except redis.RedisError:
            version = self._version  # keep what we know; ingest answers 503 meanwhile anyway
        revoked = version != self._version
        if revoked:
            self._version = version
            self._loaded_at = None
        if (self._loaded_at is None or now - self._loaded_at > self._ttl) and not self._load_all(now) and revoked:
            self._entries = {}  # a key may have been revoked and the keys cannot be loaded: forget them all
        if self._used and now - self._touched_at >= self.TOUCH_SECONDS:
            self._touch(now)

    def _load_all(self, now: float) -> bool:
        """Replace the entries by every usable key (the old ones serve meanwhile); False if Postgres failed."""
        try:
            with db.get_pool(self._app).connection() as conn:
                rows = conn.execute(load_sql("keys/usable"), {"limit": self._size}).fetchall()
        except psycopg.Error:
            self._loaded_at = now  # Postgres is down: keep serving the keys known, try again later
            return False
        self._entries = {row[2]: _principal(row) for row in rows}
        self._loaded_at = now
        return True

    def _touch(self, now: float) -> None:
        used, self._used = self._used, set()
        self._touched_at = now
        try:
            with db.get_pool(self._app).connection() as conn:
                conn.execute(load_sql("keys/touch_last_used"), {"ids": sorted(used)})
        except psycopg.Error:
            self._used |= used

    def used(self, key_id: str) -> None:
        """Note that a key authenticated a request (stamped in the next minute's flush)."""
        self._used.add(key_id)

    def put(self, token_hash: str, principal: Principal) -> None:
        """Remember a valid key; the oldest entry goes when the cache is full."""
        with self._lock:
            if len(self._entries) >= self._size:
                self._entries.pop(next(iter(self._entries)), None)
            self._entries[token_hash] = principal

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, token_hash: str) -> bool:
        """Tell whether a token hash is cached (without polling)."""
        return token_hash in self._entries


def _watch(cache_ref: weakref.ref, interval: float) -> None:
    """Poll a key cache every ``interval`` seconds until it is gone or no request asked it for a while."""
    while True:
        time.sleep(interval)
        cache: KeyCache | None = cache_ref()
        if cache is None or time.monotonic() - cache._asked_at > cache.IDLE_SECONDS:
            return  # the next request polls by itself and starts a new watcher
        try:
            cache.poll()
        except Exception:  # a watcher that dies would leave revocation to the requests: log, go on
            log.exception("the key cache's poll failed")
        del cache


def _principal(row) -> Principal:
    """Build a principal from a row of sql/keys/by_id.sql or usable.sql."""
    key_id, _name, _hash, scopes, device_kind, device_id, limit, expires_at, _revoked_at = row
    return Principal(
        key_id=key_id, scopes=frozenset(scopes),
        device=(_DEVICE_KINDS[device_kind], device_id) if device_kind else None,
        rate_limit=limit, expires_at=expires_at.timestamp() if expires_at else None, loaded_at=time.monotonic(),
    )


class AuthError(Exception):
    """A refused request, answered by ``refusal``."""

    def __init__(self, response):
        super().__init__(response.status_code)
        self.response = response


def count_refusal(reason: str) -> None:
    """Count a refused request in the metrics (unauthorized, forbidden, rate_limited)."""
    current_app.extensions["metrics_buffer"].add("requests_rejected", 1, reason)


def _unauthorized(message: str = _INVALID_MESSAGE):
    count_refusal("unauthorized")
    return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str, required_scope: str, **extra):
    """Return the 403 answer naming the scope that was needed."""
    count_refusal("forbidden")
    return error_response(403, "forbidden", message, requiredScope=required_scope, **extra)


def _failed(limiter: rate_limit.RateLimits):
    """Count a failed authentication of this address; 429 once it has failed too often, else 401."""
    retry_after = limiter.record_auth_failure()
    return rate_limit.too_many(retry_after) if retry_after else _unauthorized()


def load_principal(conn: psycopg.Connection, token: str) -> Principal | None:
    """Look a token's key up in Postgres; None unless it is a key that is not revoked."""
    match = TOKEN_REGEX.match(token)
    if match is None:
        return None
    row = conn.execute(load_sql("keys/by_id"), {"id": match.group(1)}).fetchone()
    if row is None:
        return None
    if not hmac.compare_digest(row[2], hash_token(token)) or row[8] is not None:
        return None
    return _principal(row)


def _load(token: str, token_hash: str) -> Principal | None:
    """Load a token missing from the cache (one Postgres round trip) and cache it if it is valid."""
    if TOKEN_REGEX.match(token) is None:
        return None  # not even the format: no lookup
    with db.connection() as conn:
        principal = load_principal(conn, token)
    if principal is not None:
        current_app.extensions["key_cache"].put(token_hash, principal)
    return principal


def required_scope(endpoint: str, method: str, path: str) -> str:
    """Return the scope a request needs: the view's declared one, else the default rule."""
    view = current_app.view_functions.get(endpoint)
    declared = getattr(view, "required_scope", None)
    if declared:
        return declared
    return "read" if method in ("GET", "HEAD") and path.startswith("/v1/") else "admin"


def _authorize(principal: Principal, req, endpoint: str | None) -> object | None:
    """Return a 403 answer if the principal may not make this request, else None."""
    if endpoint is None:  # no such route: the 404/405 is all it learns
        return None
    if principal.device is not None:
        kind, device_id = principal.device
        if endpoint == INGEST_ENDPOINT and "ingest" in principal.scopes:
            return None  # which readings it may send: forbid_other_devices, after parsing
        target = DEVICE_LATEST_ENDPOINTS.get(endpoint)
        if target is not None and "read" in principal.scopes and target[0] == kind \
                and (req.view_args or {}).get(target[1]) == device_id:
            return None
        return forbidden(f"A device key reaches only its own device ({KIND_NAMES[kind]} {device_id}).",
                         required_scope(endpoint, req.method, req.path))
    if "admin" in principal.scopes:
        return None
    needed = required_scope(endpoint, req.method, req.path)
    if needed in principal.scopes:
        return None
    return forbidden(f"This key lacks the {needed!r} scope that this endpoint needs.", needed)


def _check(app: Flask):
    """Return the before-request check of ``app``: 401/403/429, or the request goes on with its principal."""
    extensions = app.extensions  # read once per request without going through current_app
    cache: KeyCache = extensions["key_cache"]

    def authenticate():
        req = request._get_current_object()
        endpoint = req.endpoint
        if endpoint in PUBLIC_ENDPOINTS:
            return None
        environ = req.environ
        header = environ.get("HTTP_AUTHORIZATION")
        if not header:
            return _unauthorized(_MISSING_MESSAGE)
        limiter: rate_limit.RateLimits = extensions["rate_limits"]
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _failed(limiter)
        token_hash = hash_token(token)
        principal = cache.get(token_hash)
        if principal is None:
            retry_after = limiter.auth_failures_retry_after()
            if retry_after:  # this address failed too often: no lookup for it until the window ends
                return rate_limit.too_many(retry_after)
            principal = _load(token, token_hash)
            if principal is None:
                return _failed(limiter)
        if principal.expires_at is not None and time.time() >= principal.expires_at:
            return _failed(limiter)
        environ[PRINCIPAL_KEY] = principal
        environ[KEY_ID_KEY] = principal.key_id
        cache.used(principal.key_id)
        refusal = _authorize(principal, req, endpoint)
        if refusal is None and endpoint != INGEST_ENDPOINT:
            limiter.check()  # Flask-Limiter's count (429 by raising); ingest counts in its own Redis script
        return refusal

    return authenticate


def current_principal() -> Principal | None:
    """Return the principal of this request (None on a public endpoint)."""
    return request.environ.get(PRINCIPAL_KEY)


def forbid_other_devices(principal: Principal | None, readings: Iterable[Reading]):
    """For a device key, return the 403 answer naming every reading of another device; else None."""
    if principal is None or principal.device is None:
        return None
    own = principal.device
    offending = [
        {"index": i, ID_FIELD[r.kind]: r.device_id}
        for i, r in enumerate(readings) if (r.kind, r.device_id) != own
    ]
    if not offending:
        return None
    return forbidden(
        f"{len(offending)} reading(s) are of another device than this key's "
        f"{KIND_NAMES[own[0]]} {own[1]}; nothing was accepted.",
        "ingest", items=offending,
    )


def init_app(app: Flask) -> None:
    """Check every request of ``app`` (register after the request log, before the rate limits)."""
    settings: Settings = app.config["SETTINGS"]
    app.extensions["key_cache"] = KeyCache(app, settings)
    app.before_request(_check(app))
