"""Staged uploads: ``antioom serve --staging URL --broker URL`` streams an upload to the staging
storage, queues it and answers 202 with the queued record; ``antioom worker`` processes import
it in parts. The record lives in the database, so any server process of the fleet reports the
import's progress, not only the one that took the upload.

Real parts: two ``antioom serve`` processes, two ``antioom worker`` processes on the machine's
RabbitMQ, PostgreSQL, curl and httpx as the clients.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import antioom_command
from server_helpers import curl, serve
from test_workers import check_record, check_rejects, check_table, file_url, new_table, workers_on
from worker_helpers import AMQP_BROKER, Products, wait_until_final, write_products

__all__ = ["workers_on"]  # a fixture, used by name

FAT_RECORDS = 4_450  # ~34 MiB of 8 kB rows: two parts of at least 16 MiB each


@pytest.fixture(scope="module")
def fat_products(tmp_path_factory: pytest.TempPathFactory) -> Products:
    folder = tmp_path_factory.mktemp("inputs")
    return write_products(folder / "fat.csv", FAT_RECORDS, reject_every=89, pad=8_000)


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    folder = tmp_path / "staging"
    folder.mkdir()
    return folder


@pytest.fixture
def two_servers(tmp_path: Path, pg_url: str, staging: Path) -> Iterator[tuple[Any, Any]]:
    """Two server processes sharing the database, the staging directory and the broker."""
    options = ("--staging", file_url(staging), "--broker", AMQP_BROKER)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        serve(tmp_path / "a", *options, db_url=pg_url) as first,
        serve(tmp_path / "b", *options, db_url=pg_url) as second,
    ):
        yield first, second


def upload(url: str, path: Path, *headers: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST the file with curl: (status, headers, JSON body)."""
    args: list[str | Path] = ["-X", "POST", "--data-binary", f"@{path}", "-D", "-"]
    for header in ("Content-Type: text/csv", *headers):
        args += ["-H", header]
    done = curl(*args, url)
    head, _, body = done.stdout.replace("\r\n", "\n").partition("\n\n")
    while head.startswith("HTTP/1.1 100"):  # curl's Expect: 100-continue
        head, _, body = body.partition("\n\n")
    status = int(head.split()[1])
    fields = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    return status, {k.lower(): v for k, v in fields.items()}, json.loads(body)


def events(url: str, timeout: float = 150) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of an SSE stream, read until it ends."""
    found = []
    name = "message"
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                found.append((name, json.loads(line.split(":", 1)[1])))
                name = "message"
    return found


def test_an_upload_taken_by_one_server_is_followed_from_another(
    two_servers: tuple[Any, Any],
    fat_products: Products,
    pg_url: str,
    staging: Path,
    workers_on: Any,
) -> None:
    """The upload is answered 202 (the queued record, its Location) once staged; the other
    server's SSE follows it from the database to ``completed``, and both servers' records and
    the table say what one process would have imported."""
    first, second = two_servers
    workers = workers_on(AMQP_BROKER)
    workers.start(2)
    table = new_table()
    import_id = f"staged-{uuid.uuid4().hex[:8]}"

    status, headers, queued = upload(
        f"{first.url}/imports?table={table}",
        fat_products.path,
        f"X-Import-Id: {import_id}",
        "X-File-Name: fat.csv",
    )

    assert status == 202, queued
    assert headers["location"] == f"/imports/{import_id}"
    assert queued["status"] == "queued"
    assert queued["bytes"] == fat_products.size
    assert queued["source"] == "fat.csv"
    again, _, refused = upload(
        f"{first.url}/imports?table={table}", fat_products.path, f"X-Import-Id: {import_id}"
    )
    assert again == 409, refused  # queued, running in parts, or done: never imported twice

    seen = events(f"{second.url}/imports/{import_id}/events")
    assert seen[-1][0] == "completed", seen
    assert seen[-1][1]["processed"] == fat_products.valid
    assert seen[-1][1]["failed"] == len(fat_products.rejected)
    assert all(name in ("progress", "completed") for name, _ in seen)
    record = wait_until_final(pg_url, import_id, workers)
    check_record(record, fat_products)
    check_table(pg_url, table, fat_products)
    check_rejects(pg_url, import_id, fat_products)
    for server in (first, second):
        served = httpx.get(f"{server.url}/imports/{import_id}").json()
        assert served["status"] == "completed"
        assert served["rows"] == fat_products.records
        assert served["source"] == "fat.csv"
    assert list(staging.iterdir()) == [], "the staged object is deleted once imported"


def test_an_upload_the_broker_cannot_take_fails_with_its_reason(
    tmp_path: Path, pg_url: str, staging: Path
) -> None:
    """With the broker away, the staged upload is answered 503 with the reason, its record ends
    failed (not queued forever) and its staged object is deleted."""
    csv = tmp_path / "small.csv"
    csv.write_text("sku,name,price\nA-1,one,1.50\nA-2,two,2.50\n", encoding="utf-8")
    away = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens on port 1
    with serve(tmp_path, "--staging", file_url(staging), "--broker", away, db_url=pg_url) as one:
        status, _, answer = upload(
            f"{one.url}/imports?table={new_table()}", csv, "X-Import-Id: no-broker"
        )
        assert status == 503, answer
        assert "could not" in answer["error"]
        record = httpx.get(f"{one.url}/imports/no-broker").json()
    assert record["status"] == "failed", record
    assert record["error"], record
    assert list(staging.iterdir()) == []


def test_a_bad_staging_url_stops_the_server_at_start(tmp_path: Path) -> None:
    """A typo in --staging is a one-line error at start-up, not a 500 at the first upload."""
    done = subprocess.run(
        [*antioom_command(), "serve", "--staging", "ftp://nowhere/x", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "staging" in done.stderr.lower(), done.stderr
