"""What an import record says about an upload — its file's name and size, the API key it came
with — and the rejected rows as pages and counts per reason, on every database's store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import asgi_client, products_csv
from test_mongo import mongo_server_url, mongo_url  # noqa: F401 - fixtures used by name
from test_mysql import mysql_url  # noqa: F401 - fixture used by name

from antioom.engine.progress import Summary, utc_now
from antioom.engine.rejects import Reject
from antioom.errors import ConfigError
from antioom.history import Origin, open_store, this_process
from antioom.server import Settings, create_app
from antioom.sinks.sqlite_connection import connect as connect_sqlite

ALICE = "alice-token-0123456789"
PLAIN = "plain-token-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def client(tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(db_url=f"sqlite:///{tmp_path / 'server.db'}", rate_limit_per_minute=0, **settings)
    )
    async with asgi_client(app) as http:
        yield http


def test_api_keys_may_be_named() -> None:
    keys = Settings(api_keys=f" alice:{ALICE} , {PLAIN},ci.bot:x:y ").named_keys
    assert keys == [("alice", ALICE), ("key2", PLAIN), ("ci.bot", "x:y")]
    assert Settings(api_keys=f"alice:{ALICE},{PLAIN}").keys == [ALICE, PLAIN]
    assert Settings(api_keys=f"key1:{ALICE},{PLAIN}").named_keys[1] == ("key2", PLAIN)
    for bad in ("alice:", ":token", "a b:token", f"x:{ALICE},x:{PLAIN}", f"key2:{ALICE},{PLAIN}"):
        with pytest.raises(ConfigError):
            Settings(api_keys=bad).named_keys  # noqa: B018 - the property raises


def multipart(name: str, body: bytes, boundary: str = "b0undary") -> tuple[bytes, bytes, bytes]:
    """A multipart form around ``body`` as (head, body, tail)."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head, body, f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.anyio
async def test_records_keep_file_name_size_and_key_name(tmp_path: Path) -> None:
    csv_body = products_csv(5)
    alice = {"Authorization": f"Bearer {ALICE}"}
    async with client(tmp_path, api_keys=f"alice:{ALICE},{PLAIN}") as http:
        header = await http.post(
            "/imports?dataset=products",
            content=csv_body,
            headers={
                **alice,
                "content-type": "text/csv",
                "X-Import-Id": "by-header",
                "X-File-Name": "donn%C3%A9es%202024.csv",  # percent-encoded UTF-8
            },
        )
        query = await http.post(
            "/imports?dataset=products&filename=../../etc/passwd%0A.csv",
            content=csv_body,
            headers={
                "Authorization": f"Bearer {PLAIN}",
                "content-type": "text/csv",
                "X-Import-Id": "by-query",
            },
        )
        head, body, tail = multipart("C:\\Users\\me\\prod.csv", csv_body)

        # A multipart body names its file in the part's headers: the record has the name
        # while the upload is still running.
        release = asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            yield head + body[:20]
            await release.wait()
            yield body[20:] + tail

        upload = asyncio.create_task(
            http.post(
                "/imports?dataset=products",
                content=slow(),
                headers={
                    **alice,
                    "content-type": "multipart/form-data; boundary=b0undary",
                    "X-Import-Id": "by-form",
                },
            )
        )
        running: dict[str, Any] = {}
        for _ in range(200):
            found = await http.get("/imports/by-form", headers=alice)
            if found.status_code == 200 and found.json()["source"]:
                running = found.json()
                break
            await asyncio.sleep(0.02)
        release.set()
        form = await upload
        listed = (await http.get("/imports", headers=alice)).json()["imports"]
    assert (running["status"], running["source"], running["uploaded_by"]) == (
        "running",
        "prod.csv",
        "alice",
    )
    assert running["source_bytes"] is None  # known once the part ends
    assert header.status_code == query.status_code == form.status_code == 200, form.text
    assert (header.json()["source"], header.json()["uploaded_by"]) == ("données 2024.csv", "alice")
    records = {r["id"]: r for r in listed}
    assert {k: records["by-header"][k] for k in ("source", "source_bytes", "uploaded_by")} == {
        "source": "données 2024.csv",
        "source_bytes": len(csv_body),
        "uploaded_by": "alice",
    }
    assert {k: records["by-query"][k] for k in ("source", "source_bytes", "uploaded_by")} == {
        "source": "passwd.csv",  # no path, no control characters
        "source_bytes": len(csv_body),
        "uploaded_by": "key2",
    }
    assert {k: records["by-form"][k] for k in ("source", "source_bytes", "uploaded_by")} == {
        "source": "prod.csv",
        "source_bytes": len(csv_body),  # the file part, not the form around it
        "uploaded_by": "alice",
    }
    assert records["by-form"]["status"] == "completed"


@pytest.mark.anyio
async def test_rejects_as_json_pages_and_counts_per_reason(tmp_path: Path) -> None:
    rows = [b"sku,name,price"]
    for i in range(30):
        if i % 3 == 0:
            rows.append(f"S{i},Name {i},-{i + 1}".encode())  # price must be > 0
        elif i % 5 == 0:
            rows.append(f"S{i},,{i}".encode())  # name required
        else:
            rows.append(f"S{i},Name {i},{i}.5".encode())
    body = b"\n".join(rows) + b"\n"
    async with client(tmp_path, stored_rejects_per_import=12) as http:
        done = await http.post(
            "/imports?dataset=products", content=body, headers={"X-Import-Id": "bad"}
        )
        summary = (await http.get("/imports/bad/rejects/summary")).json()
        first = await http.get("/imports/bad/rejects", params={"format": "json", "limit": 5})
        second = await http.get(
            "/imports/bad/rejects", params={"format": "json", "limit": 5, "offset": 5}
        )
        reason = summary["reasons"][1]["reason"]
        filtered = await http.get(
            "/imports/bad/rejects", params={"format": "json", "reason": reason}
        )
        csv_text = (await http.get("/imports/bad/rejects")).text
        missing = await http.get("/imports/nope/rejects/summary")
        bad_limit = await http.get("/imports/bad/rejects", params={"format": "json", "limit": 0})
    assert done.json()["failed"] == 14  # 10 negative prices, 4 missing names
    assert (summary["kept"], summary["total"], summary["cap"]) == (12, 14, 12)
    counts = {r["reason"]: r["count"] for r in summary["reasons"]}
    assert sum(counts.values()) == 12 and len(counts) == 2
    assert [r["count"] for r in summary["reasons"]] == sorted(counts.values(), reverse=True)
    page = first.json()
    assert (page["kept"], page["total"], page["limit"], page["offset"]) == (12, 14, 5, 0)
    assert first.headers["X-Rejects-Kept"] == "12" and first.headers["X-Rejects-Total"] == "14"
    records = [r["record"] for r in page["rejects"] + second.json()["rejects"]]
    assert records == sorted(records) and len(set(records)) == 10
    assert set(page["rejects"][0]) == {"record", "line", "column", "reason", "raw"}
    assert page["rejects"][0]["raw"].startswith("S0,Name 0,-1")
    only = filtered.json()["rejects"]
    assert len(only) == counts[reason] and {r["reason"] for r in only} == {reason}
    assert len(csv_text.splitlines()) == 13  # header + the 12 kept
    assert missing.status_code == 404 and bad_limit.status_code == 400


# --------------------------------------------------------------------------- every store


@pytest.fixture(params=["sqlite", "postgresql", "mysql", "mongodb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    fixture = {"postgresql": "pg_url", "mysql": "mysql_url", "mongodb": "mongo_url"}
    return str(request.getfixturevalue(fixture[request.param]))


def test_every_store_pages_rejects_and_counts_reasons(store_url: str) -> None:
    store = open_store(store_url)
    import_id = f"t-{uuid.uuid4().hex[:12]}"  # MySQL's records are shared between tests
    try:
        summary = Summary(import_id, "running", "products", "products")
        summary.started_at = utc_now()
        store.save(summary, Origin(this_process(), "p.csv", 123, uploaded_by="alice"))
        reasons = ["price must be > 0", "required", "price must be > 0", "not a number"] * 5
        store.add_rejects(
            import_id,
            [
                Reject(i + 1, "price", reason, {"sku": f"S{i}", "name": "x", "price": "-1"}, i + 2)
                for i, reason in enumerate(reasons)
            ],
        )
        record = store.get(import_id)
        assert record is not None
        assert (record["source"], record["source_bytes"], record["uploaded_by"]) == (
            "p.csv",
            123,
            "alice",
        )
        assert store.reject_reasons(import_id) == [
            ("price must be > 0", 10),
            ("not a number", 5),
            ("required", 5),
        ]
        assert store.reject_reasons("other") == []
        page = store.reject_page(import_id, 3, 2)
        assert [row[0] for row in page] == [3, 4, 5]
        assert page[0][2:] == ("price", "price must be > 0", "S2,x,-1")
        only = store.reject_page(import_id, 100, 1, "required")
        assert [row[0] for row in only] == [6, 10, 14, 18]
        assert store.reject_page(import_id, 10, 0, "nothing") == []
    finally:
        store.close()


def test_an_older_records_table_gets_the_uploaded_by_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with connect_sqlite(str(path)) as conn:
        conn.execute(
            "CREATE TABLE antioom_imports (id VARCHAR(64) PRIMARY KEY, status TEXT, "
            "source TEXT, source_bytes INTEGER)"
        )
        conn.execute("INSERT INTO antioom_imports (id, status) VALUES ('old', 'completed')")
    store = open_store(f"sqlite:///{path}")
    try:
        record = store.get("old")
        assert record is not None and record["uploaded_by"] is None
    finally:
        store.close()
