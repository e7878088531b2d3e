"""Who may call what, how often, and from where.

* With API keys, every route of the OpenAPI schema is checked against a policy table (open,
  read, read-by-URL, write) with no key, a wrong key and the right one: a new route that is
  not in the table, or not guarded as the table says, fails.
* Failed authentications have a budget per client; after it, even the right key gets 429.
* X-Forwarded-For is believed only from ANTIOOM_TRUSTED_PROXIES (a real ``antioom serve``).
* Without keys (loopback mode), cross-site writes and non-loopback Host headers (DNS
  rebinding) are refused; same-origin pages and clients sending no Origin are not.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import antioom_command, clean_env
from fastapi import FastAPI
from server_helpers import free_port, products_csv, serve, uvicorn_thread

from antioom.errors import ConfigError
from antioom.server import Settings, create_app
from antioom.server.guards import origins, proxy_addresses

KEY = "right-key-0123456789"
CSV = {"content-type": "text/csv"}
POLICY = {
    ("get", "/health"): "open",
    ("get", "/metrics"): "open",
    ("get", "/imports"): "read",
    ("get", "/imports/{import_id}"): "read",
    ("get", "/imports/{import_id}/rejects"): "url",  # also ?token=: a download link
    ("get", "/imports/{import_id}/events"): "url",  # also ?token=: EventSource
    ("get", "/imports/{import_id}/rejects/summary"): "read",
    ("get", "/datasets"): "read",
    ("get", "/events"): "url",
    ("get", "/imports/check"): "check",  # an upload's pre-flight: a writer's key, always
    ("post", "/imports"): "write",
    ("post", "/upload"): "write",
    ("delete", "/imports/{import_id}"): "write",
}
NOT_IN_SCHEMA = ["/", "/docs", "/openapi.json"]  # open: the dashboard page and the API docs
REFUSED = (401, 403, 429)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def schema_routes(app: FastAPI) -> list[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return sorted((method, path) for path, item in paths.items() for method in item)


def one_line_error(response: httpx.Response) -> str:
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"], body
    return str(body["error"])


def status(
    url: str, method: str, path: str, headers: dict[str, str] | None = None, **params: str
) -> int:
    """The status of one request; streamed, so an open SSE feed returns at its headers."""
    target = url + path.replace("{import_id}", "nope")
    with httpx.stream(method.upper(), target, headers=headers, params=params, timeout=10) as r:
        if r.status_code in REFUSED:
            r.read()
            one_line_error(r)
        return r.status_code


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'server.db'}"


@asynccontextmanager
async def asgi_app(db_url: str, **settings: Any) -> AsyncIterator[FastAPI]:
    app = create_app(Settings(db_url=db_url, **settings))
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def client(
    app: FastAPI, address: str = "127.0.0.1", base_url: str = "http://127.0.0.1:8000"
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client over ASGI, seen by the app as coming from ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        yield http


# --------------------------------------------------------------------------- API keys


@pytest.mark.parametrize("public_reads", [False, True], ids=["keyed-reads", "public-reads"])
def test_every_route_follows_the_policy_table(db_url: str, public_reads: bool) -> None:
    app = create_app(
        Settings(
            db_url=db_url,
            api_keys=f"other-key,{KEY}",
            public_reads=public_reads,
            rate_limit_per_minute=0,
            auth_failures_per_minute=0,
        )
    )
    routes = schema_routes(app)
    assert sorted(POLICY) == routes, "a route was added or removed: give it a policy above"
    operations = app.openapi()["paths"]
    with uvicorn_thread(app) as url:
        for method, path in routes:
            kind = POLICY[method, path]
            where = f"{method.upper()} {path}"
            assert ("security" in operations[path][method]) == (kind != "open"), where
            if kind == "open":
                assert status(url, method, path) == 200, where
                continue
            needs_key = kind in ("write", "check") or not public_reads
            for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {KEY}"}):
                code = status(url, method, path, headers)
                assert (code == 401) == needs_key and code not in (403, 429), (where, headers)
            assert status(url, method, path, bearer(KEY)) not in REFUSED, where
            by_url = status(url, method, path, token=KEY)
            assert (by_url == 401) == (needs_key and kind != "url"), (where, "?token=")
            if needs_key:
                assert status(url, method, path, token="wrong") == 401, where
        for path in NOT_IN_SCHEMA:
            assert status(url, "get", path) == 200, path


@pytest.mark.anyio
async def test_a_401_says_bearer_and_reveals_nothing(db_url: str) -> None:
    """The key is checked before anything else: an unknown import is 401, not 404."""
    async with asgi_app(db_url, api_keys=KEY) as app, client(app) as http:
        missing = await http.get("/imports/nope")
        bad_option = await http.post("/imports?dataset=nope&delimiter=;;", content=b"a\n")
        found = await http.get("/imports/nope", headers=bearer(KEY))
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert one_line_error(missing) == "missing or invalid bearer token"
    assert bad_option.status_code == 401
    assert found.status_code == 404


# --------------------------------------------------------------------------- rate limits


@pytest.mark.anyio
async def test_failed_authentication_is_rate_limited_per_client(db_url: str) -> None:
    async with (
        asgi_app(db_url, api_keys=KEY, auth_failures_per_minute=3) as app,
        client(app, "10.0.0.1") as attacker,
        client(app, "10.0.0.2") as bystander,
    ):
        guesses = [
            (await attacker.get("/imports", headers=bearer(f"guess-{i}"))).status_code
            for i in range(3)
        ]
        right_key = await attacker.get("/imports", headers=bearer(KEY))
        by_url = await attacker.get("/events", params={"token": KEY})
        write = await attacker.post("/upload", content=products_csv(2), headers=CSV)
        health = await attacker.get("/health")
        other = await bystander.get("/imports", headers=bearer(KEY))
    assert guesses == [401, 401, 401]
    for refused in (right_key, by_url, write):
        assert refused.status_code == 429
        assert one_line_error(refused) == "too many failed authentications, retry later"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert health.status_code == 200
    assert other.status_code == 200


@pytest.mark.anyio
async def test_ipv6_clients_are_limited_by_their_64(db_url: str) -> None:
    async with asgi_app(db_url, api_keys=KEY, auth_failures_per_minute=2) as app:
        async with client(app, "2001:db8::1") as first:
            for _ in range(2):
                assert (await first.get("/imports")).status_code == 401
        async with (
            client(app, "2001:db8::beef") as same_64,
            client(app, "2001:db8:0:1::1") as other,
        ):
            assert (await same_64.get("/imports", headers=bearer(KEY))).status_code == 429
            assert (await other.get("/imports", headers=bearer(KEY))).status_code == 200


@pytest.mark.anyio
async def test_every_guarded_request_counts_once_failures_included(db_url: str) -> None:
    headers = {**CSV, **bearer(KEY)}
    async with asgi_app(db_url, api_keys=KEY, rate_limit_per_minute=3) as app, client(app) as http:
        uploads = [
            await http.post("/upload", content=products_csv(2), headers=headers) for _ in range(3)
        ]
        over = await http.get("/imports", headers=bearer(KEY))
    assert [r.status_code for r in uploads] == [200, 200, 200]
    assert over.status_code == 429 and one_line_error(over) == "rate limit exceeded"
    async with asgi_app(db_url, api_keys=KEY, rate_limit_per_minute=3) as app, client(app) as http:
        wrong = [(await http.get("/imports", headers=bearer("no"))).status_code for _ in "abc"]
        right = await http.get("/imports", headers=bearer(KEY))
    assert wrong == [401, 401, 401] and right.status_code == 429


# --------------------------------------------------------------------------- proxies (real process)


def get_codes(url: str, forwarded_for: list[str]) -> list[int]:
    return [
        httpx.get(f"{url}/imports", headers={"X-Forwarded-For": address}, timeout=10).status_code
        for address in forwarded_for
    ]


def test_forged_forwarded_for_is_ignored(tmp_path: Path) -> None:
    """uvicorn alone would believe X-Forwarded-For from 127.0.0.1: one local client would
    pass for many and never meet the limit."""
    with serve(tmp_path, env={"ANTIOOM_RATE_LIMIT_PER_MINUTE": "3"}) as server:
        codes = get_codes(server.url, [f"203.0.113.{i}" for i in range(5)])
    assert codes == [200, 200, 200, 429, 429]


def test_forwarded_for_from_a_trusted_proxy(tmp_path: Path) -> None:
    env = {"ANTIOOM_RATE_LIMIT_PER_MINUTE": "3", "ANTIOOM_TRUSTED_PROXIES": "127.0.0.0/8"}
    with serve(tmp_path, env=env) as server:
        distinct = get_codes(server.url, [f"203.0.113.{i}" for i in range(5)])
        chained = get_codes(server.url, ["198.51.100.7, 127.0.0.1"] * 4)  # via a second proxy
    assert distinct == [200] * 5
    assert chained == [200, 200, 200, 429]


def test_query_tokens_are_hidden_in_the_access_log(tmp_path: Path) -> None:
    with serve(tmp_path, env={"ANTIOOM_API_KEYS": KEY}) as server:
        found = httpx.get(f"{server.url}/imports/nope/rejects", params={"token": KEY}, timeout=10)
        deadline = time.monotonic() + 10
        while "token=***" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log_text()
    assert found.status_code == 404
    assert "/imports/nope/rejects?token=***" in log
    assert KEY not in log


def test_bad_trusted_proxies_stop_serve(tmp_path: Path) -> None:
    result = subprocess.run(
        [*antioom_command(), "serve", "--port", str(free_port())],
        env=clean_env(ANTIOOM_TRUSTED_PROXIES="10.0.0.1, proxy.local"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "trusted proxy 'proxy.local' is not an IP address or CIDR" in result.stderr


def test_settings_typos_are_errors() -> None:
    assert proxy_addresses(" 10.0.0.1 , 10.1.2.3/8,::1") == ["10.0.0.1", "10.0.0.0/8", "::1"]
    assert origins("http://localhost:3000/, HTTPS://Csv.Example.com") == {
        "http://localhost:3000",
        "https://csv.example.com",
    }
    for bad in ("*", "localhost"):
        with pytest.raises(ConfigError):
            proxy_addresses(bad)
    for bad in ("localhost:3000", "ftp://x", "http://x/path"):
        with pytest.raises(ConfigError):
            origins(bad)


# --------------------------------------------------------------------------- loopback mode


@pytest.mark.anyio
async def test_cross_site_writes_are_refused_without_keys(db_url: str) -> None:
    """A page elsewhere can POST a form or a text/plain fetch here without preflight."""
    async with asgi_app(db_url) as app, client(app) as http:
        writes = [(m, p) for m, p in schema_routes(app) if POLICY[m, p] == "write"]
        assert writes
        for method, path in writes:
            for headers in (
                {"Origin": "http://attacker.example"},
                {"Origin": "http://localhost:3000"},  # another local port: another origin
                {"Origin": "null"},  # sandboxed frames, file:// pages
                {"Sec-Fetch-Site": "cross-site"},
            ):
                response = await http.request(
                    method.upper(),
                    path.replace("{import_id}", "x") + "?dataset=products",
                    content=products_csv(2),
                    headers={"content-type": "text/plain", **headers},
                )
                assert response.status_code == 403, (method, path, headers)
                assert "refused" in one_line_error(response)
        assert (await http.get("/imports")).json()["total"] == 0  # nothing was imported


@pytest.mark.anyio
async def test_same_origin_and_plain_clients_may_write_without_keys(db_url: str) -> None:
    async with asgi_app(db_url, allowed_origins="http://localhost:3000") as app:
        async with client(app) as http:
            for headers in (
                {},  # curl, httpx, antioom upload: no Origin
                {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"},
                {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},  # allowed
                {"Sec-Fetch-Site": "none"},  # typed into the address bar
            ):
                response = await http.post("/upload", content=products_csv(2), headers=headers)
                assert response.status_code == 200, (headers, response.text)
        async with client(app, base_url="http://localhost:3000") as proxied:
            response = await proxied.post(
                "/upload", content=products_csv(2), headers={"Origin": "http://localhost:3000"}
            )
            assert response.status_code == 200, response.text


@pytest.mark.anyio
async def test_dns_rebinding_host_is_refused_without_keys(db_url: str) -> None:
    """A page on attacker.example rebound to 127.0.0.1 is same-origin with itself: only its
    Host header gives it away, on every route (reads would leak rejected rows)."""
    async with asgi_app(db_url) as app, client(app) as http:
        paths = [path for _, path in schema_routes(app)] + NOT_IN_SCHEMA
        for path in paths:
            url = path.replace("{import_id}", "x")
            for host in ("attacker.example:8000", "127.0.0.1.attacker.example", "10.0.0.5"):
                response = await http.get(url, headers={"Host": host})
                assert response.status_code == 403, (path, host)
                assert "DNS-rebinding" in one_line_error(response)
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "127.0.0.2", "LOCALHOST"):
            assert (await http.get("/health", headers={"Host": host})).status_code == 200, host


@pytest.mark.anyio
async def test_keyed_server_answers_any_host_and_origin(db_url: str) -> None:
    """With keys, a browser page cannot get the key: Host and Origin are not checked (a
    deployment behind its own name works without ANTIOOM_ALLOWED_ORIGINS)."""
    async with asgi_app(db_url, api_keys=KEY) as app, client(app) as http:
        headers = {"Host": "csv.example.com", "Origin": "https://other.example", **bearer(KEY)}
        response = await http.post("/upload", content=products_csv(2), headers=headers)
    assert response.status_code == 200, response.text
