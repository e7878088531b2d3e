"""Shared fixtures: real SQLite files, a real PostgreSQL schema per test, the real CLI.

PostgreSQL comes from ``ANTIOOM_TEST_POSTGRES_URL``, else the local default below if it answers
within two seconds; otherwise PostgreSQL tests are skipped, unless ``ANTIOOM_REQUIRE_SERVICES=1``
(CI), in which case they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from antioom.sinks.sqlite_connection import connect as connect_sqlite

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
_EXIT_STATUS = pytest.StashKey[int]()


# --------------------------------------------------------------------------- files and SQLite


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """``write_csv(content, name="data.csv")``: write bytes (or UTF-8 text) to a file."""

    def write(content: bytes | str, name: str = "data.csv") -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write


def fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run a query against a ``sqlite:///`` or ``postgresql://`` URL and return all rows."""
    if url.startswith("sqlite:"):
        path = urlsplit(url).path[1:]
        with connect_sqlite(path) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(name="fetch")
def fetch_fixture() -> Callable[..., list[tuple[Any, ...]]]:
    """``fetch(url, sql)``: the rows a query returns, from SQLite or PostgreSQL."""
    return fetch


def call_with_deadline(
    seconds: float, function: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``function(*args, **kwargs)``, failing the test if it has not returned after ``seconds``.

    The call runs in a daemon thread so that a hang (say, a deadlock inside the engine) fails
    one test instead of stalling the whole run.
    """
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call, name="deadline-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(function, '__name__', function)} hung: no result after {seconds}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(name="call_with_deadline")
def call_with_deadline_fixture() -> Callable[..., Any]:
    """``call_with_deadline(seconds, function, *args, **kwargs)``: see the function above."""
    return call_with_deadline


# --------------------------------------------------------------------------- the CLI


def antioom_command() -> list[str]:
    """The installed ``antioom`` console script next to this interpreter, or an equivalent."""
    script = Path(sys.executable).parent / "antioom"
    if script.exists():
        return [str(script)]
    found = shutil.which("antioom")
    if found:
        return [found]
    return [sys.executable, "-c", "from antioom.cli import main; main()"]


@pytest.fixture(scope="session", name="antioom_command")
def antioom_command_fixture() -> list[str]:
    """The command that runs the ``antioom`` CLI (for tests that manage the process)."""
    return antioom_command()


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """The environment for CLI subprocesses: no ANTIOOM_* settings."""
    return clean_env()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without antioom settings that would change defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIOOM_")}
    env.update(extra)
    return env


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., CliResult]:
    """``run_cli(*args, input=b"...")``: run ``antioom ARGS`` in a subprocess (cwd tmp_path).

    A run that does not finish within ``timeout`` seconds is killed and fails the test.
    """

    def run(*args: str | Path, input: bytes | None = None, timeout: float = 60) -> CliResult:
        try:
            completed = subprocess.run(
                [*antioom_command(), *map(str, args)],
                input=input,
                capture_output=True,
                cwd=tmp_path,
                env=clean_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"antioom {' '.join(map(str, args))} did not finish within {timeout}s")
        return CliResult(
            completed.returncode,
            completed.stdout.decode("utf-8", "replace"),
            completed.stderr.decode("utf-8", "replace"),
        )

    return run


# --------------------------------------------------------------------------- PostgreSQL


def _services_required() -> bool:
    return os.environ.get("ANTIOOM_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The URL of a reachable PostgreSQL server, or skip (fail if services are required)."""
    url = os.environ.get("ANTIOOM_TEST_POSTGRES_URL") or DEFAULT_PG_URL
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL not reachable at {url}: {str(exc).strip().splitlines()[-1:]}"
        if _services_required():
            pytest.fail(reason + " (ANTIOOM_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return url


def _with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    option = f"options=-csearch_path%3D{schema}"
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit(parts._replace(query=query))


@pytest.fixture
def pg_schema(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty schema for one test, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_url(pg_server_url: str, pg_schema: str) -> str:
    """A PostgreSQL URL whose unqualified tables live in the test's own schema."""
    url = _with_search_path(pg_server_url, pg_schema)
    with psycopg.connect(url) as conn:
        current = conn.execute("SELECT current_schema()").fetchone()
    assert current == (pg_schema,), "the search_path option did not select the test schema"
    return url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """After a hang (see call_with_deadline), end the run with its exit status right away.

    The hung call is stuck in a daemon thread inside Arrow's C++ threads; letting the
    interpreter finalise around it aborts the process (SIGABRT) after the report.
    """
    if any(t.name == "deadline-call" and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 1))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use PostgreSQL carry the ``postgres`` marker (``-m 'not postgres'``)."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def write_types_dataset(path: Path, *, table: str | None = None) -> Path:
    """A datasets file declaring ``things``: one column of every type, upsert keyed by id."""
    table_line = f"table = '{table}'\n" if table else ""
    path.write_text(
        f"[datasets.things]\n{table_line}key = ['id']\nmode = 'upsert'\n"
        "columns = [\n"
        "  { name = 'id', type = 'integer', required = true },\n"
        "  { name = 'amount', type = 'decimal', precision = 12, scale = 3 },\n"
        "  { name = 'ratio', type = 'float' },\n"
        "  { name = 'active', type = 'boolean' },\n"
        "  { name = 'day', type = 'date' },\n"
        "  { name = 'moment', type = 'timestamp' },\n"
        "  { name = 'label', type = 'string' },\n"
        "]\n"
    )
    return path


# --------------------------------------------------------------------------- a real browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("ANTIOOM_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("ANTIOOM_REQUIRE_SERVICES") == "1":
        pytest.fail(reason + " (ANTIOOM_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser). Per module, not per
    session: Playwright's sync API keeps an event loop running while it is open, and the async
    tests of other modules need to run their own."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        unavailable("Chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
