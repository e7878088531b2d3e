"""Durable uploads: a retried upload resumes, a killed server leaves no record ``running``.

Real ``antioom serve`` processes on a SQLite file, real clients (curl, httpx). Every upload
goes into the products dataset in insert mode: a row written twice would be refused as a
duplicate key and show up in ``failed``, so the counts below prove exactly-once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import antioom_command, clean_env
from server_helpers import Served, free_port, products_csv, serve, wait_record

from antioom.engine.progress import Summary
from antioom.history import Heartbeats, Origin, open_store, recover, this_process
from antioom.sinks.sqlite_connection import connect as connect_sqlite

ROWS = 200_000
BAD_EVERY = 97  # products_csv: every 97th row has a price <= 0
VALID = ROWS - len(range(0, ROWS, BAD_EVERY))


@pytest.fixture(scope="module")
def upload_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "products.csv"
    path.write_bytes(products_csv(ROWS, bad_every=BAD_EVERY))
    return path


def slow_upload(
    served: Served, path: Path, import_id: str, rate: str = "2M"
) -> subprocess.Popen[bytes]:
    """curl sending ``path`` at ``rate`` bytes/s, so that it can be cut off mid-upload."""
    return subprocess.Popen(
        [
            "curl",
            "-sS",
            "--limit-rate",
            rate,
            "-H",
            "Content-Type: text/csv",
            "-H",
            f"X-Import-Id: {import_id}",
            "--data-binary",
            f"@{path}",
            f"{served.url}/imports?dataset=products&mode=insert",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def post(served: Served, path: Path, import_id: str) -> httpx.Response:
    return httpx.post(
        f"{served.url}/imports",
        params={"dataset": "products", "mode": "insert"},
        content=path.read_bytes(),
        headers={"content-type": "text/csv", "x-import-id": import_id},
        timeout=60,
    )


def table_rows(served: Served) -> tuple[int, int]:
    """(rows, distinct skus) of the products table."""
    with connect_sqlite(served.db_url.removeprefix("sqlite:///")) as conn:
        count, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT sku) FROM products"
        ).fetchall()[0]
    return int(count), int(distinct)


def stored_rejects(served: Served, import_id: str) -> list[int]:
    response = httpx.get(f"{served.url}/imports/{import_id}/rejects", timeout=10)
    assert response.status_code == 200
    return [int(line.split(",")[0]) for line in response.text.splitlines()[1:]]


def wait_committed(served: Served, import_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the import has committed some rows (and is still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{served.url}/imports/{import_id}", timeout=5)
        if response.status_code == 200 and response.json()["processed"] > 0:
            return response.json()  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"import {import_id} committed nothing in {timeout}s")


def assert_exact(served: Served, record: dict[str, Any]) -> None:
    """The table holds each valid row once; the record accounts for every row once."""
    assert record["status"] == "completed", record
    assert (record["processed"], record["failed"], record["rows"]) == (
        VALID,
        ROWS - VALID,
        ROWS,
    )
    assert table_rows(served) == (VALID, VALID)
    rejects = stored_rejects(served, record["id"])
    assert rejects == sorted(set(rejects)) and len(rejects) == ROWS - VALID


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path, env={"ANTIOOM_BATCH_SIZE": "5000"}) as served:
        yield served


def test_a_retried_upload_resumes_after_a_client_abort(server: Served, upload_file: Path) -> None:
    curl = slow_upload(server, upload_file, "retry-me")
    try:
        wait_committed(server, "retry-me")
    finally:
        curl.kill()
        curl.wait(5)
    aborted = wait_record(server, "retry-me", ("aborted",), timeout=10)
    assert 0 < aborted["processed"] < VALID

    retried = post(server, upload_file, "retry-me")

    assert retried.status_code == 200, retried.text
    record = retried.json()
    assert record["resumed_from"]["rows"] == aborted["processed"]
    assert_exact(server, record)


def test_a_completed_or_running_import_id_is_409(server: Served, upload_file: Path) -> None:
    curl = slow_upload(server, upload_file, "busy")
    try:
        wait_committed(server, "busy")
        again = post(server, upload_file, "busy")
        assert again.status_code == 409 and "running" in again.json()["error"]
    finally:
        curl.kill()
        curl.wait(5)
    wait_record(server, "busy", ("aborted",), timeout=10)
    assert post(server, upload_file, "busy").status_code == 200
    done = post(server, upload_file, "busy")
    assert done.status_code == 409 and "completed" in done.json()["error"]


@pytest.mark.parametrize("trial", range(3))
def test_kill_9_of_the_server_then_resume(tmp_path: Path, upload_file: Path, trial: int) -> None:
    rng = random.Random(trial)
    env = {"ANTIOOM_BATCH_SIZE": str(rng.choice([3000, 5000, 8000]))}
    with serve(tmp_path, env=env) as first:
        curl = slow_upload(first, upload_file, "crash")
        try:
            wait_committed(first, "crash")
            time.sleep(rng.uniform(0.0, 1.5))
            os.kill(first.pid, signal.SIGKILL)
            first.proc.wait(5)
        finally:
            curl.kill()
            curl.wait(5)
    with serve(tmp_path, env=env) as second:
        interrupted = wait_record(second, "crash", ("interrupted",), timeout=10)
        assert "resume" in interrupted["error"]
        committed, _ = table_rows(second)
        assert interrupted["processed"] == committed > 0

        retried = post(second, upload_file, "crash")

        assert retried.status_code == 200, retried.text
        assert retried.json()["resumed_from"]["rows"] == committed
        assert_exact(second, retried.json())


def test_a_second_server_leaves_the_live_imports_of_the_first_alone(
    tmp_path: Path, upload_file: Path
) -> None:
    env = {"ANTIOOM_BATCH_SIZE": "5000"}
    with serve(tmp_path, env=env) as first:
        curl = slow_upload(first, upload_file, "shared", rate="700K")
        try:
            wait_committed(first, "shared")
            with serve(tmp_path, env=env) as second:
                time.sleep(0.5)  # its start-up recovery has run
                seen = httpx.get(f"{second.url}/imports/shared", timeout=5).json()
                assert seen["status"] == "running"
                refused = post(second, upload_file, "shared")
                assert refused.status_code == 409
        finally:
            curl.wait(60)
        record = wait_record(first, "shared", ("completed",), timeout=30)
        assert_exact(first, record)


def test_rejects_beyond_the_cap_are_counted_not_kept(tmp_path: Path, upload_file: Path) -> None:
    env = {"ANTIOOM_STORED_REJECTS_PER_IMPORT": "100"}
    with serve(tmp_path, env=env) as served:
        response = post(served, upload_file, "capped")
        assert response.status_code == 200
        record = response.json()
        assert (record["rejects_kept"], record["rejects_total"]) == (100, ROWS - VALID)
        rejects = httpx.get(f"{served.url}/imports/capped/rejects", timeout=10)
        assert rejects.headers["x-rejects-kept"] == "100"
        assert rejects.headers["x-rejects-total"] == str(ROWS - VALID)
        assert len(rejects.text.splitlines()) == 101
        listed = httpx.get(f"{served.url}/imports/capped", timeout=5).json()
        assert (listed["rejects_kept"], listed["rejects_total"]) == (100, ROWS - VALID)


def test_recovery_marks_only_records_whose_owner_is_gone(tmp_path: Path) -> None:
    """Owners on this host are checked by pid; on other hosts by the heartbeat's age."""
    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    try:

        def running(import_id: str, owner: str) -> None:
            store.save(Summary(import_id, "running", "products", "products"), Origin(owner))

        running("mine-alive", this_process())
        running("mine-beating", this_process())  # an import_csv call beside the server
        running("here-dead", f"{socket.gethostname()}:999999999:1")
        running("far-fresh", "another-host:1:1")
        running("far-stale", "another-host:2:2")
        # A lease far longer than the heartbeat interval: on a busy machine (the suite runs
        # in several processes) a heartbeat thread may be late by a good part of a second.
        lease_s = 1.5
        beats = Heartbeats(lambda: store, interval_s=0.1)
        beats.add("far-fresh")  # stands in for the other host's heartbeat thread
        beats.add("mine-beating")
        time.sleep(lease_s + 0.2)  # far-stale's only heartbeat, its save, is older than a lease

        marked = recover(store, lease_s=lease_s, running_here={"mine-alive"})

        beats.stop()
        assert sorted(marked) == ["far-stale", "here-dead"]
        kept = ("mine-alive", "mine-beating", "far-fresh")
        statuses = {i: store.get(i)["status"] for i in kept}  # type: ignore[index]
        assert statuses == dict.fromkeys(kept, "running")
        time.sleep(lease_s + 0.2)  # a lease without heartbeats
        # not running here any more, their heartbeats stopped:
        expected = ["far-fresh", "mine-alive", "mine-beating"]
        assert sorted(recover(store, lease_s=lease_s)) == expected
    finally:
        store.close()


def test_antioom_upload_retries_through_a_server_restart(tmp_path: Path, upload_file: Path) -> None:
    """kill -9 of the server mid-upload; a new server on the same port and database takes the
    client's retry, which resumes the import."""
    port = free_port()
    env = {"ANTIOOM_BATCH_SIZE": "5000"}
    with serve(tmp_path, env=env, port=port) as first:
        client = subprocess.Popen(
            [
                *antioom_command(),
                "upload",
                str(upload_file),
                "--url",
                first.url,
                "--dataset",
                "products",
                "--mode",
                "insert",
                "--import-id",
                "survivor",
                "--retries",
                "6",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        wait_committed(first, "survivor")
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(5)
    with serve(tmp_path, env=env, port=port) as second:
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        assert "retry 1" in err
        record = json.loads(out)
        assert record["resumed_from"]["rows"] > 0
        assert_exact(second, record)
