"""Request guards: API keys, per-client rate limits, and the loopback-mode browser checks.

* :class:`Guard` — a bearer token on every route but the open ones (reads too, unless
  ``public_reads``), compared in constant time; a request budget per client, and a much smaller
  budget of failed authentications after which the client gets 429 even with the right key.
* :class:`LoopbackOnly` — without keys, anything on this machine may call us, including every
  web page open in its browsers: refuse a Host that is not a loopback name (DNS rebinding) and
  writes from another origin (forms and ``fetch`` "simple requests" need no preflight).
* :func:`proxy_addresses` and :class:`RedactTokens` — what ``antioom serve`` hands to uvicorn.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import re
import time
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from antioom.errors import ConfigError
from antioom.server.settings import Settings

WINDOW_S = 60.0


class RateLimiter:
    """Per client, a one-minute window opened by its first request (no shared minute boundary
    to time a burst against); the table of clients is bounded."""

    MAX_CLIENTS = 10_000

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._windows: dict[str, tuple[float, int]] = {}

    def _window(self, client: str, now: float) -> tuple[float, int]:
        start, count = self._windows.get(client, (now, 0))
        return (now, 0) if now - start >= WINDOW_S else (start, count)

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` has budget again; None while it has some."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        start, count = self._window(client, now)
        return None if count < self.per_minute else max(1, math.ceil(start + WINDOW_S - now))

    def add(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        start, count = self._window(client, now)
        if client not in self._windows and len(self._windows) >= self.MAX_CLIENTS:
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < WINDOW_S}
            if len(self._windows) >= self.MAX_CLIENTS:  # a flood of clients: start afresh
                self._windows.clear()
        self._windows[client] = (start, count + 1)

    def refuse_if_spent(self, client: str, error: str) -> None:
        """Raise 429 with Retry-After once ``client``'s budget is spent."""
        retry = self.retry_after(client)
        if retry is not None:
            raise HTTPException(429, error, headers={"Retry-After": str(retry)})

    def check(self, client: str) -> None:
        """Count a request, or raise 429 once the budget is spent."""
        self.refuse_if_spent(client, "rate limit exceeded")
        self.add(client)


def client_key(request: Request) -> str:
    """The rate limits' key: the peer address (``antioom serve`` lets uvicorn replace it from
    X-Forwarded-For only for trusted proxies); IPv6 by /64, as one host usually owns a /64."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and not address.is_loopback:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host


class Guard:
    """API keys and rate limits; the app's routes call :meth:`check` as a dependency."""

    def __init__(self, settings: Settings) -> None:
        self.keys = [(name, token.encode()) for name, token in settings.named_keys]
        self.public_reads = settings.public_reads
        self.requests = RateLimiter(settings.rate_limit_per_minute)
        self.failures = RateLimiter(settings.auth_failures_per_minute)

    def check(self, request: Request, token: str | None, *, write: bool) -> str | None:
        """Failure budget first (a guesser learns nothing more once it is spent, not even
        that a key is right), then the request budget, then the key. Returns the name of the
        key that matched (also kept as ``request.state.api_key_name``), None if none was
        needed."""
        client = client_key(request)
        self.failures.refuse_if_spent(client, "too many failed authentications, retry later")
        self.requests.check(client)
        request.state.api_key_name = None
        if not self.keys or (self.public_reads and not write):
            return None
        presented = (token or "").encode()
        matched = None
        for name, key in self.keys:  # every key is compared: the time tells nothing
            if hmac.compare_digest(presented, key):
                matched = name
        if matched is None:
            self.failures.add(client)
            raise HTTPException(
                401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        request.state.api_key_name = matched
        return matched


def host_name(host: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lowercased."""
    if host.startswith("["):
        end = host.find("]")
        return host[1:end].lower() if end > 0 else host.lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origins(value: str) -> frozenset[str]:
    """ANTIOOM_ALLOWED_ORIGINS as browsers send Origin: ``scheme://host[:port]``."""
    found = set()
    for entry in (item.strip().rstrip("/").lower() for item in value.split(",")):
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ConfigError(f"allowed origin {entry!r} is not like http://host[:port]")
        found.add(entry)
    return frozenset(found)


class LoopbackOnly:
    """ASGI middleware for loopback mode (no API keys): every request must name a loopback
    Host (or an allowed origin's host); writes must come from no browser page, this server's
    own page or an allowed origin. Errors are 403 with a one-line JSON reason."""

    SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp, allowed_origins: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.origins = allowed_origins
        self.hosts = frozenset(urlsplit(origin).hostname for origin in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self.refusal(scope)
            if error is not None:
                await JSONResponse({"error": error}, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        name = host_name(host)
        if host and not (is_loopback_name(name) or name in self.hosts):
            return (
                f"Host {host[:100]!r} refused: without an API key only loopback names are "
                "served (DNS-rebinding protection; see ANTIOOM_ALLOWED_ORIGINS)"
            )
        if scope["method"] in self.SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None:
            origin = origin.rstrip("/").lower()
            if origin == f"{scope['scheme']}://{host}".lower() or origin in self.origins:
                return None
            return (
                f"cross-origin write from {origin[:100]!r} refused "
                "(allow it with ANTIOOM_ALLOWED_ORIGINS)"
            )
        if headers.get("sec-fetch-site") == "cross-site":
            return "cross-site write refused"
        return None


def proxy_addresses(value: str) -> list[str]:
    """ANTIOOM_TRUSTED_PROXIES as uvicorn's ``forwarded_allow_ips``. A typo is an error: uvicorn
    would silently never match it (nor a CIDR with host bits), and ``*`` trusts everyone."""
    addresses = []
    for entry in (item.strip() for item in value.split(",")):
        if not entry:
            continue
        try:
            if "/" in entry:
                addresses.append(str(ipaddress.ip_network(entry, strict=False)))
            else:
                addresses.append(str(ipaddress.ip_address(entry)))
        except ValueError:
            raise ConfigError(f"trusted proxy {entry!r} is not an IP address or CIDR") from None
    return addresses


class RedactTokens(logging.Filter):
    """uvicorn's access log prints query strings: hide the values of ``?token=``."""

    TOKEN = re.compile(r"([?&]token=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.TOKEN.sub(r"\1***", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True
