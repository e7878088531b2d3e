"""Helpers for the server tests: CSV bodies, free ports, a real ``antioom serve`` process, and
an RSS sampler."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from conftest import antioom_command, clean_env

HEADER = b"sku,name,price\n"
LOCAL = "http://localhost"  # without API keys the server answers loopback names only


def products_csv(rows: int, *, start: int = 0, bad_every: int = 0) -> bytes:
    """``rows`` products rows; every ``bad_every``-th has a price <= 0 (a validation reject)."""
    lines = []
    for i in range(start, start + rows):
        price = "-1" if bad_every and i % bad_every == 0 else f"{i % 1000 + 1}.25"
        lines.append(f"SKU-{i},Product Name {i},{price}\n")
    return HEADER + "".join(lines).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_health(
    base_url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``GET /health`` answers 200 (fail early if ``proc`` died)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            response = httpx.get(f"{base_url}/health", timeout=2)
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{base_url}/health did not answer 200 in {timeout}s (last: {last!r})")


@dataclass
class Served:
    """A running ``antioom serve`` process."""

    proc: subprocess.Popen[bytes]
    url: str
    db_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")


@contextmanager
def serve(
    directory: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    db_url: str | None = None,
) -> Iterator[Served]:
    """``antioom serve`` on a loopback port (a free one by default) with ``db_url``, by default
    a SQLite database in ``directory``."""
    port = port or free_port()
    db_url = db_url or f"sqlite:///{directory / 'server.db'}"
    log = directory / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*antioom_command(), "serve", "--port", str(port), "--db", db_url, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            env=clean_env(**(env or {})),
        )
    served = Served(proc, f"http://127.0.0.1:{port}", db_url, log)
    try:
        wait_health(served.url, proc=proc)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@dataclass
class RssSampler:
    """Samples a process's RSS (MiB) every ``interval_s`` in a thread."""

    pid: int
    interval_s: float = 0.2
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        process = psutil.Process(self.pid)
        while True:
            try:
                self.samples.append(process.memory_info().rss / (1 << 20))
            except psutil.Error:
                return
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> RssSampler:
        self.samples.append(psutil.Process(self.pid).memory_info().rss / (1 << 20))
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def start(self) -> float:
        return self.samples[0]

    @property
    def peak(self) -> float:
        return max(self.samples)

    @property
    def growth(self) -> float:
        return self.peak - self.start


def generate_products(path: Path, size: str) -> Path:
    """``antioom generate PATH --size SIZE`` (fast: the generator is vectorised)."""
    subprocess.run(
        [*antioom_command(), "generate", str(path), "--size", size],
        check=True,
        capture_output=True,
        env=clean_env(),
        timeout=120,
    )
    return path


def curl(*args: str | os.PathLike[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``curl -sS ARGS`` and return the completed process (text output)."""
    return subprocess.run(
        ["curl", "-sS", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def uvicorn_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread of this process; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def check_server_keeps_records(db_url: str, table: str) -> None:
    """Upload through the app on ``db_url``; the record and its rejects are kept in that
    database, and a second app instance on the same database still serves them."""
    from starlette.testclient import TestClient

    from antioom.server import Settings, create_app

    import_id = f"keep-{table}"
    body = b"id,name,qty\n1,a,3\n2,b,x\n3,c,4\n"
    with TestClient(
        create_app(Settings(db_url=db_url, rate_limit_per_minute=0)), base_url=LOCAL
    ) as client:
        response = client.post(
            f"/imports?table={table}",
            content=body,
            headers={"Content-Type": "text/csv", "X-Import-Id": import_id},
        )
        assert response.status_code == 200, response.text
        record = response.json()
        assert (record["status"], record["processed"], record["failed"]) == ("completed", 3, 0)
        assert client.get("/health").json()["db"] == "ok"
    with TestClient(
        create_app(Settings(db_url=db_url, rate_limit_per_minute=0)), base_url=LOCAL
    ) as client:
        listed = client.get("/imports").json()["imports"]
        assert import_id in [item["id"] for item in listed]
        assert client.get(f"/imports/{import_id}").json()["rows"] == 3
        assert client.get(f"/imports/{import_id}/rejects").text.startswith("record,line,column")
        again = client.post(
            f"/imports?table={table}",
            content=body,
            headers={"Content-Type": "text/csv", "X-Import-Id": import_id},
        )
        assert again.status_code == 409


def wait_record(
    served: Served, import_id: str, statuses: tuple[str, ...], timeout: float
) -> dict[str, Any]:
    """Poll ``GET /imports/ID`` until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        response = httpx.get(f"{served.url}/imports/{import_id}", timeout=5)
        if response.status_code == 200:
            last = response.json()
            if last["status"] in statuses:
                return last  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"import {import_id} never reached {statuses}: last {last}")


@asynccontextmanager
async def asgi_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``app`` over ASGI, with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client
