"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) offline, in a real headless Chromium: every
request that leaves localhost is aborted, and none may be attempted or fail; the pages render
the API's operations, also when the app is mounted under a prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI
from server_helpers import serve, uvicorn_thread
from test_dashboard import ARTIFACTS

from antioom.server import Settings, create_app

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


class Offline:
    """A page whose requests off localhost are aborted; it records them, and every request
    that failed, and the page's errors."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.outside: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.loaded: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        self.page.on("requestfinished", lambda r: self.loaded.append(r.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None
        )

    def _route(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def check_clean(self) -> None:
        assert self.outside == [], self.outside
        assert self.failed == [], self.failed
        assert self.errors == [], self.errors


def operations(base: str) -> int:
    """How many operations the app's OpenAPI schema has."""
    schema = httpx.get(f"{base}/openapi.json", timeout=10).json()
    return sum(len(item) for item in schema["paths"].values())


def check_swagger(browser: Any, base: str, screenshot: str | None = None) -> None:
    expected = operations(base)
    assert expected >= 10
    offline = Offline(browser)
    page = offline.page
    try:
        page.goto(f"{base}/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.locator(".opblock").count() == expected
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert any(path.replace("\u200b", "") == "/imports" for path in paths), paths
        assert page.locator("button.authorize").count() == 1  # the bearer key
        assert page.title() == "anti-oom — API docs"
        page.wait_for_load_state("networkidle")
        if screenshot:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    finally:
        page.close()
    offline.check_clean()
    assert f"{base}/docs/assets/swagger-ui-bundle.js" in offline.loaded
    assert f"{base}/openapi.json" in offline.loaded


def check_redoc(browser: Any, base: str) -> None:
    offline = Offline(browser)
    page = offline.page
    try:
        page.goto(f"{base}/redoc")
        title = page.locator("h2", has_text="Stream a CSV upload into the database")
        title.wait_for(timeout=20_000)  # an operation's section, rendered from the schema
        page.wait_for_load_state("networkidle")
    finally:
        page.close()
    offline.check_clean()
    assert f"{base}/docs/assets/redoc.standalone.js" in offline.loaded


def test_docs_offline(browser: Any, tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        check_swagger(browser, server.url, screenshot="docs.png")
        check_redoc(browser, server.url)


def test_docs_under_a_mount_prefix(browser: Any, tmp_path: Path) -> None:
    outer = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    outer.mount("/antioom", create_app(Settings(db_url=f"sqlite:///{tmp_path / 'm.db'}")))
    with uvicorn_thread(outer) as url:
        check_swagger(browser, f"{url}/antioom")
        check_redoc(browser, f"{url}/antioom")


def test_docs_stay_open_with_keys(tmp_path: Path) -> None:
    """With API keys the docs and their assets stay open (the data behind them does not)."""
    with serve(tmp_path, env={"ANTIOOM_API_KEYS": "docs-key-0123456789"}) as server:
        for path in (
            "/openapi.json",
            "/docs",
            "/redoc",
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css",
            "/docs/assets/redoc.standalone.js",
            "/docs/assets/favicon.png",
        ):
            assert httpx.get(server.url + path, timeout=10).status_code == 200, path
        assert httpx.get(f"{server.url}/imports", timeout=10).status_code == 401
        script = httpx.get(f"{server.url}/docs/assets/redoc.standalone.js", timeout=10)
        assert script.headers["content-type"].startswith("text/javascript")
        assert b"cdn.redoc.ly" not in script.content and b"Redoc" in script.content
