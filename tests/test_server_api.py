"""The HTTP API in process: httpx over ASGI against ``create_app()`` with a real SQLite file.

Request bodies are streamed from async generators (no Content-Length), so the server's
streaming checks — size limit, multipart parsing, concurrency — are what the tests exercise.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import HEADER, asgi_client, products_csv

import antioom.server.app as server_app
from antioom.engine.source import ByteChannel
from antioom.server import Settings, create_app
from antioom.server.live import LiveImport

pytestmark = pytest.mark.anyio
CSV = {"content-type": "text/csv"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'server.db'}"


@asynccontextmanager
async def client_with(db_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(Settings(db_url=db_url, **settings))) as client:
        yield client


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """``data`` as a streamed body (httpx sends it chunked, without Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def held_open(
    first: bytes, release: asyncio.Event, rest: bytes = b""
) -> AsyncIterator[bytes]:
    """A body that sends ``first``, then waits for ``release`` before sending ``rest``."""
    yield first
    await release.wait()
    if rest:
        yield rest


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for a condition"
        await asyncio.sleep(0.01)


def one_line_error(response: httpx.Response) -> str:
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


# --------------------------------------------------------------------------- uploads


async def test_seed_upload_response_shape(db_url: str) -> None:
    async with client_with(db_url) as client:
        body = products_csv(100, bad_every=10)
        response = await client.post("/upload", content=chunks(body), headers=CSV)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["message"] == "Upload completed"
    assert data["stats"] == {"processed": 90, "failed": 10}
    assert data["id"] and data["status"] == "completed"


async def test_raw_import_returns_the_record(db_url: str, fetch: Any) -> None:
    body = products_csv(1000)
    async with client_with(db_url) as client:
        response = await client.post(
            "/imports?dataset=products",
            content=chunks(body),
            headers={**CSV, "X-Import-Id": "raw-1"},
        )
    assert response.status_code == 200, response.text
    record = response.json()
    expected_keys = {
        "id",
        "status",
        "dataset",
        "table",
        "processed",
        "failed",
        "rows",
        "bytes",
        "started_at",
        "finished_at",
        "duration_s",
        "rejects_url",
    }
    assert expected_keys <= set(record)
    assert record["id"] == "raw-1"
    assert record["status"] == "completed"
    assert (record["dataset"], record["table"]) == ("products", "products")
    assert (record["processed"], record["failed"], record["rows"]) == (1000, 0, 1000)
    assert record["bytes"] == len(body)
    assert record["rejects_url"] == "/imports/raw-1/rejects"
    assert record["finished_at"] >= record["started_at"]
    assert fetch(db_url, "SELECT COUNT(*) FROM products") == [(1000,)]


async def test_gzip_body_and_table_target(db_url: str, fetch: Any) -> None:
    body = gzip.compress(b"a,b\n1,x\n2,y\n3,z\n")
    async with client_with(db_url) as client:
        gz = await client.post(
            "/imports?table=things", content=body, headers={"content-type": "application/gzip"}
        )
        encoded = await client.post(
            "/imports?table=things",
            content=body,
            headers={**CSV, "Content-Encoding": "gzip"},
        )
    for response in (gz, encoded):
        assert response.status_code == 200, response.text
        assert response.json()["processed"] == 3
        assert response.json()["table"] == "things"
    assert fetch(db_url, "SELECT COUNT(*) FROM things") == [(6,)]


async def test_multipart_import(db_url: str, fetch: Any) -> None:
    body = products_csv(500)
    async with client_with(db_url) as client:
        response = await client.post(
            "/imports?dataset=products",
            data={"comment": "before the file"},
            files={"file": ("products.csv", body, "text/csv")},
        )
    assert response.status_code == 200, response.text
    assert response.json()["processed"] == 500
    assert fetch(db_url, "SELECT COUNT(*) FROM products") == [(500,)]


async def test_multipart_split_into_tiny_chunks(db_url: str) -> None:
    """The push parser must cope with boundaries split across receive() chunks."""
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n'
            f"Content-Type: text/csv\r\n\r\n"
        ).encode()
        + products_csv(200)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    async with client_with(db_url) as client:
        response = await client.post(
            "/imports?dataset=products", content=chunks(body, 7), headers=headers
        )
    assert response.status_code == 200, response.text
    assert response.json()["processed"] == 200


async def test_rejects_csv_neutralises_formulas(db_url: str) -> None:
    body = HEADER + b"A-1,ok,1.5\n=1+2,evil,-3\nA-3,fine,2\n+SUM(1),bad,0\n"
    async with client_with(db_url) as client:
        record = (await client.post("/upload", content=body, headers=CSV)).json()
        response = await client.get(record["rejects_url"])
        missing = await client.get("/imports/nope/rejects")
    assert record["stats"] == {"processed": 2, "failed": 2}
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["record", "line", "column", "reason", "raw"]
    assert [row[0] for row in rows[1:]] == ["2", "4"]
    assert all(row[2] == "price" for row in rows[1:])
    raws = [row[4] for row in rows[1:]]
    assert raws[0] == "'=1+2,evil,-3"
    assert raws[1].startswith("'+SUM(1)")
    assert missing.status_code == 404


async def test_stored_rejects_are_bounded(db_url: str) -> None:
    body = products_csv(100, bad_every=2)
    async with client_with(db_url, stored_rejects_per_import=7) as client:
        record = (await client.post("/upload", content=body, headers=CSV)).json()
        rejects = await client.get(record["rejects_url"])
    assert record["failed"] == 50
    assert len(list(csv.reader(io.StringIO(rejects.text)))) == 1 + 7


# --------------------------------------------------------------------------- refusals


async def test_bearer_token_required_when_keys_configured(db_url: str) -> None:
    async with client_with(db_url, api_keys="k1, k2") as client:
        missing = await client.post("/upload", content=products_csv(3), headers=CSV)
        wrong = await client.post(
            "/upload", content=products_csv(3), headers={**CSV, "Authorization": "Bearer nope"}
        )
        right = await client.post(
            "/upload", content=products_csv(3), headers={**CSV, "Authorization": "Bearer k2"}
        )
        delete = await client.delete("/imports/whatever")
        listing = await client.get("/imports")
    assert missing.status_code == 401 and wrong.status_code == 401
    one_line_error(missing)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200, right.text
    assert delete.status_code == 401
    assert listing.status_code == 401  # reads need a key too (tests/test_server_security.py)


async def test_api_key_env_alias(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "seed-key")
    assert Settings(db_url=db_url).keys == ["seed-key"]
    monkeypatch.setenv("ANTIOOM_API_KEYS", "a,b")
    assert Settings(db_url=db_url).keys == ["a", "b"]


async def test_reused_import_id_is_409(db_url: str) -> None:
    headers = {**CSV, "X-Import-Id": "same-id"}
    async with client_with(db_url) as client:
        first = await client.post("/upload", content=products_csv(3), headers=headers)
        second = await client.post("/upload", content=products_csv(3), headers=headers)
        bad = await client.post(
            "/upload", content=products_csv(3), headers={**CSV, "X-Import-Id": "no spaces/here"}
        )
    assert first.status_code == 200
    assert second.status_code == 409
    one_line_error(second)
    assert bad.status_code == 400


async def test_streamed_body_over_the_limit_is_413(db_url: str, fetch: Any) -> None:
    body = products_csv(2000)  # ~60 KB, sent chunked: only the streaming check can catch it
    async with client_with(db_url, max_upload_bytes=10_000) as client:
        response = await client.post(
            "/imports?dataset=products",
            content=chunks(body, 1000),
            headers={**CSV, "X-Import-Id": "too-big"},
        )
        declared = await client.post(
            "/imports?dataset=products",
            content=body,
            headers=CSV,  # with Content-Length: refused before reading
        )
        record = (await client.get("/imports/too-big")).json()
    assert response.status_code == 413, response.text
    assert "10000" in one_line_error(response)
    assert declared.status_code == 413
    assert record["status"] == "aborted"


async def test_unsupported_content_type_is_415(db_url: str) -> None:
    async with client_with(db_url) as client:
        response = await client.post(
            "/upload", content=b'{"a": 1}', headers={"content-type": "application/json"}
        )
    assert response.status_code == 415
    one_line_error(response)


async def test_malformed_multipart_is_400(db_url: str) -> None:
    headers = {"content-type": "multipart/form-data; boundary=expected"}
    async with client_with(db_url) as client:
        wrong_boundary = await client.post(
            "/upload",
            content=b"--other\r\nContent-Disposition: form-data\r\n\r\nx",
            headers=headers,
        )
        no_boundary = await client.post(
            "/upload", content=b"x", headers={"content-type": "multipart/form-data"}
        )
        truncated = await client.post(
            "/upload",
            content=b'--expected\r\nContent-Disposition: form-data; name="file"\r\n\r\nsku,na',
            headers=headers,
        )
    for response in (wrong_boundary, no_boundary, truncated):
        assert response.status_code == 400, response.text
        one_line_error(response)


async def test_multipart_without_file_field_is_400(db_url: str) -> None:
    async with client_with(db_url) as client:
        response = await client.post(
            "/upload", files={"upload": ("p.csv", products_csv(3), "text/csv")}
        )
    assert response.status_code == 400
    assert "'file'" in one_line_error(response)


async def test_csv_missing_required_column_is_400(db_url: str) -> None:
    async with client_with(db_url) as client:
        response = await client.post("/upload", content=b"sku,name\nA,a\n", headers=CSV)
    assert response.status_code == 400
    assert "price" in one_line_error(response)


async def test_empty_upload_completes_with_nothing_to_import(db_url: str) -> None:
    async with client_with(db_url) as client:
        empty = await client.post("/upload", content=b"", headers=CSV)
    assert empty.status_code == 200, empty.text
    record = empty.json()
    assert (record["status"], record["rows"], record["processed"]) == ("completed", 0, 0)
    assert record["notes"] == ["the input is empty: nothing to import"]


async def test_bad_query_parameters_are_400(db_url: str) -> None:
    async with client_with(db_url) as client:
        mode = await client.post("/imports?dataset=products&mode=merge", content=b"x", headers=CSV)
        table = await client.post("/imports?table=drop;table", content=b"x", headers=CSV)
        neither = await client.post("/imports", content=b"x", headers=CSV)
        unknown = await client.post("/imports?dataset=nope", content=b"x", headers=CSV)
        limit = await client.get("/imports?limit=0")
    for response in (mode, table, neither, unknown, limit):
        assert response.status_code == 400, response.text
        one_line_error(response)


async def test_rate_limit_per_client(db_url: str) -> None:
    async with client_with(db_url, rate_limit_per_minute=3) as client:
        codes = [(await client.get("/imports")).status_code for _ in range(7)]
        health = await client.get("/health")
    # A fixed one-minute window: even straddling a minute boundary, 7 requests hit the limit.
    assert codes[:3] == [200, 200, 200]
    assert 429 in codes
    assert health.status_code == 200


async def test_concurrency_limit_is_503_with_retry_after(db_url: str) -> None:
    release = asyncio.Event()
    async with client_with(db_url, max_concurrent_imports=1) as client:
        app: Any = client._transport.app  # type: ignore[attr-defined]
        registry = app.state.registry
        first = asyncio.create_task(
            client.post(
                "/upload",
                content=held_open(products_csv(10), release, products_csv(10, start=10)[15:]),
                headers={**CSV, "X-Import-Id": "holder"},
            )
        )
        await wait_for(lambda: "holder" in registry.imports)
        second = await client.post("/upload", content=products_csv(3), headers=CSV)
        running = (await client.get("/imports/holder")).json()
        release.set()
        done = await first
        third = await client.post("/upload", content=products_csv(3), headers=CSV)
    assert second.status_code == 503
    assert second.headers["retry-after"].isdigit()
    one_line_error(second)
    assert running["status"] == "running"
    assert done.status_code == 200 and done.json()["processed"] == 20
    assert third.status_code == 200


async def test_an_accepted_import_is_running_before_its_record_is_written(db_url: str) -> None:
    """The upload registers its import before a thread writes the record: a client polling
    its own X-Import-Id in that window sees it running, not 404."""
    async with client_with(db_url) as client:
        app: Any = client._transport.app  # type: ignore[attr-defined]
        assert app.state.registry.try_start(LiveImport("just-accepted", ByteChannel(1024)))
        running = await client.get("/imports/just-accepted")
        app.state.registry.finish("just-accepted")
        gone = await client.get("/imports/just-accepted")
    assert running.status_code == 200
    assert running.json()["status"] == "running"
    assert running.json()["processed"] == 0
    assert gone.status_code == 404


async def test_delete_cancels_a_running_import(db_url: str) -> None:
    release = asyncio.Event()
    first = products_csv(100_000)  # > Arrow's 1 MiB block: rows are committed while held open
    async with client_with(db_url, batch_size=1000) as client:
        app: Any = client._transport.app  # type: ignore[attr-defined]
        registry = app.state.registry
        upload = asyncio.create_task(
            client.post(
                "/upload",
                content=held_open(first, release, products_csv(10, start=10**6)[15:]),
                headers={**CSV, "X-Import-Id": "to-cancel"},
            )
        )
        await wait_for(lambda: "to-cancel" in registry.imports)
        await wait_for(lambda: registry.imports["to-cancel"].state.get("processed", 0) > 0, 20)
        cancel = await client.delete("/imports/to-cancel")
        # The client sends nothing more: the import must still end promptly.
        response = await asyncio.wait_for(upload, 5)
        release.set()
        record = (await client.get("/imports/to-cancel")).json()
        again = await client.delete("/imports/to-cancel")
        missing = await client.delete("/imports/nope")
    assert cancel.status_code == 202
    assert response.json()["status"] == "aborted"
    assert record["status"] == "aborted"
    assert 0 < record["processed"] == response.json()["processed"] <= 100_000
    assert again.status_code == 409
    assert missing.status_code == 404


# --------------------------------------------------------------------------- database down


async def test_health_and_uploads_503_when_database_unreachable() -> None:
    url = "postgresql://postgres@127.0.0.1:1/antioom"
    async with client_with(url) as client:
        health = await client.get("/health")
        started = time.monotonic()
        upload = await client.post("/upload", content=products_csv(3), headers=CSV)
        elapsed = time.monotonic() - started
    assert health.status_code == 503
    assert health.json()["status"] != "ok" and health.json()["db"] != "ok"
    assert "memory" in health.json()
    assert upload.status_code == 503
    one_line_error(upload)
    assert elapsed < 5


async def test_health_ok(db_url: str) -> None:
    async with client_with(db_url) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    data = response.json()
    assert (data["status"], data["db"]) == ("ok", "ok")
    assert data["memory"]["rss_mb"] > 0


# --------------------------------------------------------------------------- records


async def test_list_is_newest_first_and_paginated(db_url: str) -> None:
    async with client_with(db_url) as client:
        for i in range(5):
            response = await client.post(
                "/upload", content=products_csv(3), headers={**CSV, "X-Import-Id": f"imp-{i}"}
            )
            assert response.status_code == 200
        first = (await client.get("/imports?limit=2")).json()
        second = (await client.get("/imports?limit=2&offset=2")).json()
        last = (await client.get("/imports?limit=2&offset=4")).json()
    assert first["total"] == 5
    assert [r["id"] for r in first["imports"]] == ["imp-4", "imp-3"]
    assert [r["id"] for r in second["imports"]] == ["imp-2", "imp-1"]
    assert [r["id"] for r in last["imports"]] == ["imp-0"]
    assert first["imports"][0]["rejects_url"] == "/imports/imp-4/rejects"


async def test_records_persist_across_app_instances(db_url: str) -> None:
    async with client_with(db_url) as client:
        body = products_csv(10, bad_every=5)
        await client.post("/upload", content=body, headers={**CSV, "X-Import-Id": "kept"})
    async with client_with(db_url) as client:
        record = await client.get("/imports/kept")
        rejects = await client.get("/imports/kept/rejects")
        reuse = await client.post("/upload", content=body, headers={**CSV, "X-Import-Id": "kept"})
        listing = (await client.get("/imports")).json()
    assert record.status_code == 200
    assert record.json()["status"] == "completed"
    assert (record.json()["processed"], record.json()["failed"]) == (8, 2)
    assert len(rejects.text.strip().splitlines()) == 1 + 2
    assert reuse.status_code == 409
    assert [r["id"] for r in listing["imports"]] == ["kept"]


async def test_unknown_import_is_404(db_url: str) -> None:
    async with client_with(db_url) as client:
        response = await client.get("/imports/nope")
        events = await client.get("/imports/nope/events")
    assert response.status_code == 404
    one_line_error(response)
    assert events.status_code == 404


async def test_events_of_a_finished_import(db_url: str) -> None:
    async with client_with(db_url) as client:
        await client.post("/upload", content=products_csv(5), headers={**CSV, "X-Import-Id": "e"})
        response = await client.get("/imports/e/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: completed" in response.text


async def test_metrics(db_url: str) -> None:
    async with client_with(db_url) as client:
        await client.post("/upload", content=products_csv(5), headers=CSV)
        await client.post("/upload", content=b"nope\n1\n", headers=CSV)
        response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'antioom_imports_total{status="completed"} 1.0' in text
    assert 'antioom_imports_total{status="failed"} 1.0' in text
    assert "antioom_rows_processed_total 5.0" in text
    assert "antioom_imports_in_flight 0.0" in text


async def test_many_uploads_in_parallel(db_url: str, fetch: Any) -> None:
    async with client_with(db_url, max_concurrent_imports=4, batch_size=100) as client:

        async def upload(i: int) -> httpx.Response:
            body = products_csv(1000, start=i * 1000)
            return await client.post("/upload", content=chunks(body, 8192), headers=CSV)

        responses = await asyncio.gather(*(upload(i) for i in range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert sum(r.json()["processed"] for r in responses) == 4000
    assert fetch(db_url, "SELECT COUNT(*) FROM products") == [(4000,)]


async def test_postgres_keeps_records_and_rejects(pg_url: str, fetch: Any) -> None:
    body = products_csv(1000, bad_every=100)
    async with client_with(pg_url, stored_rejects_per_import=5) as client:
        response = await client.post(
            "/upload", content=chunks(body), headers={**CSV, "X-Import-Id": "pg-1"}
        )
        health = await client.get("/health")
    assert response.status_code == 200, response.text
    assert health.json()["db"] == "ok"
    async with client_with(pg_url) as client:
        record = (await client.get("/imports/pg-1")).json()
        listing = (await client.get("/imports")).json()
        rejects = await client.get("/imports/pg-1/rejects")
        reuse = await client.post("/upload", content=body, headers={**CSV, "X-Import-Id": "pg-1"})
    assert (record["status"], record["processed"], record["failed"]) == ("completed", 990, 10)
    assert listing["total"] == 1
    assert len(rejects.text.strip().splitlines()) == 1 + 5
    assert reuse.status_code == 409
    assert fetch(pg_url, "SELECT COUNT(*) FROM products") == [(990,)]


async def test_an_engine_bug_is_a_500_json_error(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(server_app, "run_import", broken)
    async with client_with(db_url) as client:
        response = await client.post(
            "/upload", content=products_csv(3), headers={**CSV, "X-Import-Id": "bug"}
        )
        record = (await client.get("/imports/bug")).json()
    assert response.status_code == 500
    assert one_line_error(response).startswith("internal error")
    assert (record["status"], record["dataset"]) == ("failed", "products")
    assert record["started_at"] and record["finished_at"]


async def test_a_table_that_cannot_take_the_data_is_422(db_url: str) -> None:
    header = ",".join(f"c{i}" for i in range(2100))  # SQLite allows 2000 columns
    body = (header + "\n" + ",".join(["1"] * 2100) + "\n").encode()
    async with client_with(db_url) as client:
        response = await client.post("/imports?table=wide", content=chunks(body), headers=CSV)
        reserved = await client.post(
            "/imports?table=order", content=b"index,select\n1,a\n", headers=CSV
        )
    assert response.status_code == 422, response.text
    assert "too many columns" in one_line_error(response)
    assert reserved.status_code == 200, reserved.text
    assert reserved.json()["processed"] == 1


# --------------------------------------------------------------------------- CSV options


async def test_csv_options_are_documented_in_openapi(db_url: str) -> None:
    async with client_with(db_url) as client:
        spec = (await client.get("/openapi.json")).json()
    options = {"delimiter", "quote", "escape", "encoding", "header", "columns", "skip"}
    options |= {"comment", "null", "type", "infer"}
    for path in ("/imports", "/upload"):
        parameters = {p["name"]: p for p in spec["paths"][path]["post"]["parameters"]}
        assert options <= set(parameters), path
        assert all(parameters[name].get("description") for name in options), path
        assert all(parameters[name]["in"] == "query" for name in options), path


async def test_multipart_upload_with_options(db_url: str, fetch: Any) -> None:
    body = "Bericht 2024\n\nid|name|amount\n1|Müller, A.|10\n2|Özil|n/a\n".encode("cp1252")
    async with client_with(db_url) as client:
        response = await client.post(
            "/imports",
            params={"table": "report", "encoding": "cp1252", "null": "n/a", "skip": "2"},
            files={"file": ("report.csv", body, "text/csv")},
        )
    assert response.status_code == 200, response.text
    dialect = response.json()["dialect"]
    assert dialect["delimiter"] == "|" and "delimiter" in dialect["detected"]
    assert dialect["skipped_lines"] == 2 and dialect["encoding"] == "cp1252"
    rows = fetch(db_url, 'SELECT id, name, amount FROM "report" ORDER BY id')
    assert rows == [(1, "Müller, A.", 10), (2, "Özil", None)]


async def test_a_type_for_an_unknown_column_is_400(db_url: str) -> None:
    async with client_with(db_url) as client:
        response = await client.post(
            "/imports?table=typed&type=nope=string", content=b"a,b\n1,2\n", headers=CSV
        )
        record = (await client.get(f"/imports/{response.json()['id']}")).json()
    assert response.status_code == 400, response.text
    assert "nope" in one_line_error(response)
    assert record["status"] == "failed"


async def test_limit_and_max_rejects_over_http(db_url: str) -> None:
    body = b"sku,name,price\n" + b"".join(
        f"S{i},n,{-1 if i % 10 == 9 else 1}\n".encode() for i in range(100)
    )
    async with client_with(db_url) as client:
        limited = await client.post("/imports?dataset=products&limit=25", content=body, headers=CSV)
        stopped = await client.post(
            "/imports?dataset=products&max_rejects=0", content=body, headers=CSV
        )
        negative = await client.post(
            "/imports?dataset=products&limit=-1", content=body, headers=CSV
        )
    assert limited.status_code == 200
    assert (limited.json()["rows"], limited.json()["processed"]) == (25, 23)
    assert stopped.status_code == 422
    assert (
        stopped.json()["status"] == "failed"
        and "more than the 0 allowed" in stopped.json()["error"]
    )
    assert negative.status_code == 400
