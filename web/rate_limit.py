"""Rate limits shared by every web process (Flask-Limiter, counters in Redis), and the client address.

Each key has its own limit (its ``rateLimit``, else DEVICE_KEY_RATE_LIMIT for a device key or
API_KEY_RATE_LIMIT for any other), counted across every route, process and dyno. Failed
authentications are counted per client address (AUTH_FAILURE_RATE_LIMIT): past it, the address
gets 429 without a key lookup until the window ends. The client address is the socket's peer,
or, with TRUSTED_PROXY_HOPS = n > 0, what the n-th proxy from us wrote in X-Forwarded-For
(werkzeug's ProxyFix); a client cannot pick its own address by sending the header.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import limits
from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from common.settings import Settings
from common.streams import RATE_LIMIT_PREFIX
from web.errors import error_response

_FAILURE_NAMESPACE = "auth-failures"
_KEY_PREFIX = RATE_LIMIT_PREFIX  # Redis key names live in common/streams.py
_COUNTER_CACHE_SIZE = 100_000


def too_many(retry_after: int):
    """Return the 429 answer: JSON ``retryAfter`` and the ``Retry-After`` header, in seconds."""
    current_app.extensions["metrics_buffer"].add("requests_rejected", 1, "rate_limited")
    response = error_response(429, "rate_limited", f"Too many requests; retry after {retry_after} s.",
                              headers={"Retry-After": str(retry_after)}, retryAfter=retry_after)
    return response


def _seconds_until(reset_at: float) -> int:
    return max(1, math.ceil(reset_at - time.time()))


class RateLimits:
    """The app's Flask-Limiter plus the per-address count of failed authentications."""

    def __init__(self, app: Flask, principal_of: Callable[[], object | None]):
        settings: Settings = app.config["SETTINGS"]
        self._principal_of = principal_of
        self._device_default = settings.device_key_rate_limit
        self._key_default = settings.api_key_rate_limit
        self._failure_limit = limits.parse(settings.auth_failure_rate_limit)
        self.limiter = Limiter(
            key_func=self._key,
            app=app,
            application_limits=[self._limit],
            storage_uri=settings.redis_url,
            strategy="fixed-window",  # one INCR per request
            headers_enabled=False,
            key_prefix=_KEY_PREFIX,
            # Redis down: the limit lets requests through (ingest answers 503 by itself then; reads
            # fall back to Postgres and /readyz must still say what is wrong).
            swallow_errors=True,
        )
        self.check = _keep_hooks_off_ingest(app, self.limiter)
        self.limiter.request_filter(lambda: self._principal_of() is None)
        self._counters: dict[tuple[str, str], tuple[str, int, int]] = {}
        self._parsed: dict[str, limits.RateLimitItem] = {}

    def _key(self) -> str:
        return self._principal_of().key_id

    def _limit(self) -> str:
        return self._limit_of(self._principal_of())

    def _limit_of(self, principal) -> str:
        if principal.rate_limit:
            return principal.rate_limit
        return self._device_default if principal.device is not None else self._key_default

    def ingest_counter(self, principal) -> tuple[str, int, int]:
        """Return (counter key, limit, window seconds) of ``principal``'s key, for the ingest script.

        The key is the one Flask-Limiter's application limit uses (prefix, key id, scope "global"),
        so ingest and every other route of a key share one count.
        """
        limit = self._limit_of(principal)
        cached = self._counters.get((principal.key_id, limit))
        if cached is None:  # a key's first ingest in this process: parse its limit once per distinct limit
            item = self._parsed.get(limit)
            if item is None:
                item = limits.parse(limit)
                if len(self._parsed) >= _COUNTER_CACHE_SIZE:
                    self._parsed.clear()
                self._parsed[limit] = item
            key = self.limiter.storage.prefixed_key(item.key_for(_KEY_PREFIX, principal.key_id, "global"))
            cached = (key, item.amount, item.get_expiry())
            if len(self._counters) >= _COUNTER_CACHE_SIZE:
                self._counters.clear()
            self._counters[(principal.key_id, limit)] = cached
        return cached

    def retry_after(self) -> int:
        """Seconds until this request's breached limit resets."""
        current = self.limiter.current_limit
        return _seconds_until(current.window[0]) if current is not None else 1

    def auth_failures_retry_after(self) -> int:
        """Seconds this address must wait because it failed too often; 0 if it may try."""
        strategy = self.limiter.limiter
        if strategy.test(self._failure_limit, _FAILURE_NAMESPACE, request.remote_addr or ""):
            return 0
        reset_at, _ = strategy.get_window_stats(self._failure_limit, _FAILURE_NAMESPACE, request.remote_addr or "")
        return _seconds_until(reset_at)

    def record_auth_failure(self) -> int:
        """Count one failed authentication of this address; return the seconds to wait if it is over, else 0."""
        if self.limiter.limiter.hit(self._failure_limit, _FAILURE_NAMESPACE, request.remote_addr or ""):
            return 0
        return self.auth_failures_retry_after()


def _keep_hooks_off_ingest(app: Flask, limiter: Limiter) -> Callable[[], None]:
    """Take Flask-Limiter's three request hooks off the app; return its check, for web.auth to call.

    Ingest counts in its own Redis call (RateLimits.ingest_counter), so it must not pay for the
    hooks: each registered hook costs every request a call, even one that returns at once. The
    check runs from web.auth's hook on every other route. The other two hooks do nothing with these
    settings: the after-request one adds headers (``headers_enabled=False``) and applies
    ``deduct_when`` limits (none), the teardown one resets a context that lives on the request
    context and goes with it.
    """
    check = limiter._check_request_limit
    app.before_request_funcs[None].remove(check)
    after = app.after_request_funcs[None]
    teardown = app.teardown_request_funcs[None]
    inject = [f for f in after if isinstance(f, functools.partial) and f.args == (limiter,)]
    release = [f for f in teardown if getattr(f, "__self__", None) is limiter]
    if len(inject) != 1 or len(release) != 1:
        raise RuntimeError("Flask-Limiter's request hooks are not the ones web.rate_limit knows")
    after.remove(inject[0])
    teardown.remove(release[0])
    return check


def init_app(app: Flask, principal_of: Callable[[], object | None]) -> None:
    """Limit every authenticated request of ``app`` (register after web.auth); trust TRUSTED_PROXY_HOPS proxies."""
    settings: Settings = app.config["SETTINGS"]
    hops = settings.trusted_proxy_hops
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0)
    rate_limits = app.extensions["rate_limits"] = RateLimits(app, principal_of)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(_exc: RateLimitExceeded):
        return too_many(rate_limits.retry_after())
