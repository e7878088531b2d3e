"""The Python API as an application uses it: the blocking call, the async ones, the push
interface, and the two example apps in docs/examples (run over ASGI with httpx)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import antioom
from antioom import (
    Dataset,
    Dialect,
    InputError,
    PushImport,
    Summary,
    TooManyRejects,
    import_csv,
    import_csv_async,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def products(rows: int, *, bad_every: int = 0) -> bytes:
    lines = [
        f"SKU-{i},Product {i},{-1 if bad_every and i % bad_every == 0 else i % 100 + 1}\n"
        for i in range(rows)
    ]
    return ("sku,name,price\n" + "".join(lines)).encode()


def count(sqlite_url: str, fetch: Any, table: str = "products") -> int:
    return int(fetch(sqlite_url, f"SELECT count(*) FROM {table}")[0][0])


def test_the_public_names_are_exported() -> None:
    for name in ("Dialect", "Summary", "ProgressEvent", "PushImport", "import_csv_async"):
        assert name in antioom.__all__ and hasattr(antioom, name)


def test_a_dataset_table_defaults_to_its_name() -> None:
    dataset = Dataset(name="orders", columns=({"name": "id"},))  # type: ignore[arg-type]
    assert dataset.table == "orders"


def test_dialect_and_limits_from_python(write_csv: Any, sqlite_url: str, fetch: Any) -> None:
    path = write_csv("sku;name;price\nA;a;1\nB;b;-2\nC;c;3\n")
    with pytest.raises(TooManyRejects):
        import_csv(path, sqlite_url, dataset="products", dialect=Dialect(delimiter=";"),
                   max_rejects=0)  # fmt: skip
    summary = import_csv(path, sqlite_url, dataset="products", dialect=Dialect(delimiter=";"))
    assert (summary.processed, summary.failed) == (2, 1)


async def test_import_csv_async_keeps_the_loop_free(
    write_csv: Any, sqlite_url: str, fetch: Any
) -> None:
    path = write_csv(products(50_000))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    summary = await import_csv_async(path, sqlite_url, dataset="products", batch_size=2_000)
    ticker.cancel()
    assert summary.processed == 50_000 == count(sqlite_url, fetch)
    assert ticks > 5  # the loop ran while the import did


async def test_cancelling_the_task_stops_at_a_batch_boundary(
    write_csv: Any, sqlite_url: str, fetch: Any
) -> None:
    path = write_csv(products(300_000))
    task = asyncio.create_task(
        import_csv_async(path, sqlite_url, dataset="products", batch_size=1_000, import_id="c1")
    )
    while not fetch_count_safe(sqlite_url, fetch):
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.0)  # the worker thread reaches its next batch boundary
    stopped = count(sqlite_url, fetch)
    assert 0 < stopped < 300_000
    resumed = await import_csv_async(path, sqlite_url, dataset="products", import_id="c1")
    assert resumed.resumed_from is not None
    assert count(sqlite_url, fetch) == 300_000


def fetch_count_safe(sqlite_url: str, fetch: Any) -> int:
    try:
        return count(sqlite_url, fetch)
    except Exception:  # the table does not exist yet
        return 0


async def test_push_import_streams_in_a_bounded_buffer(sqlite_url: str, fetch: Any) -> None:
    data = products(100_000, bad_every=1000)
    async with PushImport(sqlite_url, dataset="products", buffer_bytes=64 << 10) as upload:
        for start in range(0, len(data), 10_000):
            await upload.push(data[start : start + 10_000])
        assert upload._channel.high_water <= 64 << 10
    summary = upload.summary
    assert isinstance(summary, Summary)
    assert (summary.processed, summary.failed) == (99_900, 100)
    assert count(sqlite_url, fetch) == 99_900


async def test_push_import_raises_the_import_error(sqlite_url: str) -> None:
    with pytest.raises(InputError, match="lacks required column"):
        async with PushImport(sqlite_url, dataset="products") as upload:
            await upload.push(b"id,label\n")
            for _ in range(200):  # the engine reads the header, fails, refuses more data
                await upload.push(b"1,x\n" * 1000)
                await asyncio.sleep(0.001)


async def test_a_failing_producer_cancels_the_push_import(sqlite_url: str, fetch: Any) -> None:
    with pytest.raises(RuntimeError, match="producer broke"):
        async with PushImport(sqlite_url, dataset="products") as upload:
            await upload.push(products(1_000))
            raise RuntimeError("producer broke")
    assert fetch_count_safe(sqlite_url, fetch) < 1_000  # the half-sent last record never lands


def load_example(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    monkeypatch.chdir(tmp_path)  # the examples use ./shop.db
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_embed_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOP_DB_URL", f"sqlite:///{tmp_path / 'shop.db'}")
    app = load_example("embed", monkeypatch, tmp_path).app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        ok = await client.post("/products", content=products(5_000, bad_every=100))
        bad = await client.post("/products", content=b"id,label\n1,x\n")
    assert ok.status_code == 200 and ok.json()["imported"] == 4_950
    assert ok.json()["rejected"] == 50 and ok.json()["first_rejects"][0]["column"] == "price"
    assert bad.status_code == 400 and "sku" in bad.json()["detail"]


async def test_the_mount_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app = load_example("mount", monkeypatch, tmp_path).app
    async with app.router.lifespan_context(app):  # runs the mounted app's lifespan too
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            home = await client.get("/")
            health = await client.get("/antioom/health")
            upload = await client.post(
                "/antioom/imports?dataset=products",
                content=products(100),
                headers={"content-type": "text/csv"},
            )
    assert home.json()["imports"] == "/antioom/"
    assert health.status_code == 200 and health.json()["db"] == "ok"
    assert upload.status_code == 200 and upload.json()["processed"] == 100


def test_cancel_event_from_another_thread(write_csv: Any, sqlite_url: str, fetch: Any) -> None:
    path = write_csv(products(300_000))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(antioom.ImportCancelled):
        import_csv(path, sqlite_url, dataset="products", batch_size=1_000, cancel=cancel)
    assert time.monotonic() - started < 10
