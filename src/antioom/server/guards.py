"""Request guards: bearer-token auth and a per-client rate limit."""

from __future__ import annotations

import hmac
import time

from fastapi import HTTPException, Request


def check_token(request: Request, keys: list[str]) -> None:
    """Raise 401 unless the request carries one of ``keys`` (no keys configured: open)."""
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip().encode()
    valid = scheme.lower() == "bearer" and any(
        hmac.compare_digest(presented, key.encode()) for key in keys
    )
    if not valid:
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


class RateLimiter:
    """A fixed one-minute window per client address; the table of clients is bounded."""

    MAX_CLIENTS = 10_000

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._windows: dict[str, tuple[int, int]] = {}

    def check(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        window = int(time.time() // 60)
        start, count = self._windows.get(client, (window, 0))
        if start != window:
            start, count = window, 0
        if count >= self.per_minute:
            retry = str(60 - int(time.time()) % 60)
            raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": retry})
        if len(self._windows) >= self.MAX_CLIENTS and client not in self._windows:
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
            if len(self._windows) >= self.MAX_CLIENTS:  # a flood of clients: start afresh
                self._windows.clear()
        self._windows[client] = (start, count + 1)
