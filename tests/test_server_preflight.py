"""Uploads are refused before their body is sent: ``GET /datasets`` (what a form can offer),
``GET /imports/check`` (the pre-flight the dashboard and ``antioom upload`` make), and a real
server that stops reading an upload it refused (``Connection: close``) instead of draining it.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import antioom_command, clean_env
from server_helpers import Served, asgi_client, curl, products_csv, serve

from antioom.server import Settings, create_app

KEY = "writer-key-0123456789"
BIG = 48 << 20  # an upload the server must not read when it refuses it at once
DATASETS = """
[datasets.customers]
table = "crm_customers"
mode = "upsert"
key = ["email"]

[[datasets.customers.columns]]
name = "email"
source = "E-mail"
required = true
pattern = '[^@]+@[^@]+'
max_length = 254

[[datasets.customers.columns]]
name = "plan"
choices = ["free", "pro"]

[[datasets.customers.columns]]
name = "balance"
type = "decimal"
precision = 12
scale = 2
min = 0
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def datasets_file(tmp_path: Path) -> Path:
    path = tmp_path / "datasets.toml"
    path.write_text(DATASETS, "utf-8")
    return path


@asynccontextmanager
async def client(tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(db_url=f"sqlite:///{tmp_path / 'server.db'}", rate_limit_per_minute=0, **settings)
    )
    async with asgi_client(app) as http:
        yield http


@pytest.mark.anyio
async def test_datasets_lists_names_tables_keys_and_column_rules(
    tmp_path: Path, datasets_file: Path
) -> None:
    async with client(tmp_path, datasets=str(datasets_file)) as http:
        response = await http.get("/datasets")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["default"] == "products"
    by_name = {d["name"]: d for d in body["datasets"]}
    assert list(by_name) == ["customers", "products"]
    customers = by_name["customers"]
    assert (customers["table"], customers["mode"], customers["key"]) == (
        "crm_customers",
        "upsert",
        ["email"],
    )
    assert customers["columns"] == [
        {
            "name": "email",
            "type": "string",
            "source": "E-mail",
            "required": True,
            "rules": {"max_length": 254, "pattern": "[^@]+@[^@]+"},
        },
        {
            "name": "plan",
            "type": "string",
            "source": "plan",
            "required": False,
            "rules": {"choices": ["free", "pro"]},
        },
        {
            "name": "balance",
            "type": "decimal",
            "source": "balance",
            "required": False,
            "rules": {"min": 0, "precision": 12, "scale": 2},
        },
    ]
    price = by_name["products"]["columns"][2]
    assert (price["name"], price["type"], price["rules"]) == ("price", "float", {"gt": 0})


BAD_UPLOADS = [
    ({"dataset": "nope"}, 400, "unknown dataset 'nope'; known: customers, products"),
    ({"table": "drop table"}, 400, "invalid table name 'drop table'"),
    ({"table": "t", "mode": "upsert"}, 400, "mode upsert needs a key"),
    ({"dataset": "products", "mode": "merge"}, 400, "mode must be insert or upsert"),
    ({"table": "t", "delimiter": ";;"}, 400, "delimiter"),
    ({"table": "t", "encoding": "klingon"}, 400, "klingon"),
    ({"dataset": "products", "type": "price=decimal"}, 400, "apply to table imports"),
    ({}, 400, "choose a dataset (?dataset=NAME) or a table (?table=NAME)"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("query", "code", "error"), BAD_UPLOADS)
async def test_the_check_refuses_what_the_upload_would(
    tmp_path: Path, datasets_file: Path, query: dict[str, str], code: int, error: str
) -> None:
    """Same query, same status and reason: from the pre-flight, and from the upload itself
    (before reading its body)."""
    async with client(tmp_path, datasets=str(datasets_file)) as http:
        checked = await http.get("/imports/check", params=query)
        uploaded = await http.post(
            "/imports", params=query, content=products_csv(3), headers={"content-type": "text/csv"}
        )
        listed = (await http.get("/imports")).json()
    assert checked.status_code == code, checked.text
    assert error in checked.json()["error"], checked.json()
    assert (uploaded.status_code, uploaded.json()) == (code, checked.json())
    assert listed["total"] == 0  # refused before any record was made


@pytest.mark.anyio
async def test_the_check_accepts_and_names_the_target(tmp_path: Path, datasets_file: Path) -> None:
    async with client(
        tmp_path, datasets=str(datasets_file), max_upload_bytes=1000, api_keys=f"alice:{KEY}"
    ) as http:
        auth = {"Authorization": f"Bearer {KEY}"}
        dataset = await http.get("/imports/check", params={"dataset": "customers"}, headers=auth)
        table = await http.get(
            "/imports/check", params={"table": "orders", "delimiter": ";", "size": "1000"},
            headers={**auth, "X-Import-Id": "web-1"},
        )  # fmt: skip
        too_big = await http.get(
            "/imports/check", params={"table": "orders", "size": "1001"}, headers=auth
        )
        reserved = await http.get(
            "/imports/check", params={"table": "t"}, headers={**auth, "X-Import-Id": "check"}
        )
        bad_id = await http.get(
            "/imports/check", params={"table": "t"}, headers={**auth, "X-Import-Id": "a b"}
        )
        no_key = await http.get("/imports/check", params={"table": "orders"})
        post_reserved = await http.post(
            "/imports?table=t", content=b"a\n1\n", headers={**auth, "X-Import-Id": "check"}
        )
    assert dataset.json() == {
        "ok": True,
        "dataset": "customers",
        "table": "crm_customers",
        "mode": "upsert",
        "uploaded_by": "alice",
    }
    assert table.json() == {
        "ok": True,
        "dataset": None,
        "table": "orders",
        "mode": "insert",
        "uploaded_by": "alice",
    }
    assert too_big.status_code == 413
    assert reserved.status_code == 400 and "reserved" in reserved.json()["error"]
    assert post_reserved.status_code == 400 and "reserved" in post_reserved.json()["error"]
    assert bad_id.status_code == 400
    assert no_key.status_code == 401


# --------------------------------------------------------------------------- a real server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as served:
        yield served


def lines(total: int) -> Iterator[bytes]:
    """``total`` bytes of products rows, 64 KiB at a time (never held whole)."""
    chunk = (b"SKU-1,Product Name 1,1.25\n" * 2600)[: 64 << 10]
    sent = 0
    while sent < total:
        piece = chunk[: total - sent]
        sent += len(piece)
        yield piece


def post_counting(url: str, head: bytes, total: int) -> tuple[httpx.Response, int]:
    """POST ``head`` then rows up to ``total`` bytes (Content-Length set, no Expect header,
    like httpx and browsers); returns the answer and how many body bytes were handed to the
    socket before it came."""
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for piece in (head, *lines(total - len(head))):
            sent += len(piece)
            yield piece

    headers = {"content-type": "text/csv", "content-length": str(total)}
    response = httpx.post(url, content=body(), headers=headers, timeout=60)
    return response, sent


def test_a_refused_upload_is_not_read_to_its_end(server: Served) -> None:
    """The server answers an unknown dataset before reading the body, and closes the
    connection: the client stops after what the socket buffers held, not after 48 MB."""
    response, sent = post_counting(f"{server.url}/imports?dataset=nope", b"sku,name,price\n", BIG)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "unknown dataset 'nope'; known: products"}
    assert response.headers["connection"] == "close"
    assert sent < 16 << 20, sent

    # An import that fails on the body (the header lacks the dataset's columns) stops too.
    response, sent = post_counting(f"{server.url}/imports?dataset=products", b"id,x,y\n", BIG)
    assert response.status_code == 400, response.text
    assert "lacks required column(s) sku, name, price" in response.json()["error"]
    assert response.headers["connection"] == "close"
    assert sent < 16 << 20, sent

    # A completed upload keeps its connection.
    ok = httpx.post(
        f"{server.url}/imports?dataset=products",
        content=products_csv(3),
        headers={"content-type": "text/csv"},
    )
    assert ok.status_code == 200 and "connection" not in ok.headers


def test_curl_sends_nothing_of_a_refused_upload(server: Served, tmp_path: Path) -> None:
    """curl asks ``Expect: 100-continue`` for a large body: uvicorn sends 100 only when the
    app reads the body, so a refusal at the start costs no body bytes at all; without
    Expect, curl stops once it sees the early answer."""
    big = tmp_path / "big.csv"
    with open(big, "wb") as out:
        for piece in lines(BIG):
            out.write(piece)
    url = f"{server.url}/imports?dataset=nope"
    for extra, most in ((), 0), (("-H", "Expect:"), 16 << 20):
        result = curl(
            "-o", "/dev/null", "-w", "%{http_code} %{size_upload}", *extra,
            "-H", "Content-Type: text/csv", "--data-binary", f"@{big}", url,
        )  # fmt: skip
        code, sent = result.stdout.split()
        assert code == "400", result.stderr
        assert int(float(sent)) <= most, (extra, sent)


def test_antioom_upload_asks_before_sending(server: Served, tmp_path: Path) -> None:
    """``antioom upload`` makes the pre-flight: a refused target sends no POST at all; an
    accepted one uploads, and the record names the file."""
    data = tmp_path / "orders 2024.csv"
    data.write_bytes(b"id,total\n1,9.5\n2,3\n")

    def upload(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*antioom_command(), "upload", str(data), "--url", server.url, "--quiet", *args],
            capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
        )  # fmt: skip

    refused = upload("--dataset", "nope")
    assert refused.returncode == 2, refused.stderr
    assert "unknown dataset 'nope'" in refused.stderr
    upserted = upload("--table", "orders", "--mode", "upsert")
    assert upserted.returncode == 2 and "mode upsert needs a key" in upserted.stderr
    log = server.log_text()
    assert "GET /imports/check?" in log
    assert "POST /imports" not in log

    done = upload("--table", "orders", "--import-id", "cli-orders", "--json")
    assert done.returncode == 0, done.stderr
    record = httpx.get(f"{server.url}/imports/cli-orders").json()
    assert (record["source"], record["source_bytes"], record["processed"]) == (
        "orders 2024.csv",
        data.stat().st_size,
        2,
    )
