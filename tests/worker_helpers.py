"""Plumbing for the queued-import tests (test_workers.py): generated inputs whose every row is a
function of its record number, real ``antioom worker`` processes, the broker's queue, and
reading back what the workers wrote.

The products files: record ``i`` (1-based) is ``SKU-i,<name of i>,<price of i>``. A few names
are quoted (a comma and doubled quotes; a newline inside the value) so that the splitter's
quote-aware scan is exercised, a few are not ASCII. Past the first ``CLEAN_RECORDS`` records,
every ``reject_every``-th price is ``n/a``: a ``--table`` import infers the price column from
the first block (all numbers: a float) and rejects those rows as "not a number", so the valid
rows, the rejects and their record numbers are all known without parsing the file again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import antioom_command, clean_env, unavailable

from antioom.history import open_store

AMQP_BROKER = os.environ.get("ANTIOOM_TEST_BROKER_URL") or "amqp://guest:guest@127.0.0.1:5672//"
REDIS_BROKER = os.environ.get("ANTIOOM_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
QUEUE = "antioom"
FINAL = ("completed", "failed", "aborted")
PART_SEQS = 1 << 32  # a part's batches are seqs part * 2**32 + n; its closing row is the last
# Shown of a worker's output: its log records and exceptions, not Celery's banner, its warning
# about running as root, nor traceback frames (the whole output is in the test's tmp_path).
NOISE = re.compile(
    r"^\s|^$|^Traceback|SecurityWarning|not recommended|--uid option|uid=|^[ -]*[*-]{3}"
)
CLEAN_RECORDS = 200  # no invalid row before this: the first block infers a numeric price


# --------------------------------------------------------------------------- the inputs


def name_of(record: int, pad: int = 0) -> str:
    if record % 50 == 0:
        name = f'Name, with "quotes" {record}'
    elif record % 97 == 0:
        name = f"two\nlines {record}"
    elif record % 113 == 0:
        name = f"Prodüct ✓ {record}"
    else:
        name = f"Product {record}"
    return f"{name} {'x' * pad}" if pad else name


def cents_of(record: int) -> int:
    return (record * 7919) % 100_000 + 1


def _price(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _field(value: str) -> str:
    if any(ch in value for ch in ',"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


@dataclass(frozen=True)
class Products:
    """A generated products file: ``records`` data records, the ``rejected`` ones' numbers."""

    path: Path
    records: int
    rejected: frozenset[int]
    pad: int
    keys: int | None = None  # upsert files: record i has key SKU-(i % keys)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def valid(self) -> int:
        return self.records - len(self.rejected)

    def sku_of(self, record: int) -> str:
        return f"SKU-{record % self.keys if self.keys else record}"

    def expected(self) -> dict[str, tuple[str, int]]:
        """sku -> (name, price in cents): the table after the import (the last valid row of
        each key wins; keys are unique unless ``keys`` is set)."""
        table: dict[str, tuple[str, int]] = {}
        for record in range(1, self.records + 1):
            if record not in self.rejected:
                table[self.sku_of(record)] = (name_of(record, self.pad), cents_of(record))
        return table


def write_products(
    path: Path,
    records: int,
    *,
    reject_every: int,
    clean: int = CLEAN_RECORDS,
    pad: int = 0,
    keys: int | None = None,
) -> Products:
    """Write ``records`` products records (see the module docstring), none rejected in the first
    ``clean`` ones (they must cover the first block, from which the types are inferred); ``pad``
    makes each name that much longer (fat rows: a file big enough to split, with few rows)."""
    rejected = frozenset(i for i in range(clean + 1, records + 1) if i % reject_every == 0)
    products = Products(path, records, rejected, pad, keys)

    def line(i: int) -> str:
        price = "n/a" if i in rejected else _price(cents_of(i))
        return f"{products.sku_of(i)},{_field(name_of(i, pad))},{price}\n"

    plain = not pad and not keys  # most lines: written inline, ~3x faster than line()
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("sku,name,price\n")
        for low in range(1, records + 1, 100_000):
            out.write(
                "".join(
                    f"SKU-{i},Product {i},{(c := (i * 7919) % 100_000 + 1) // 100}.{c % 100:02d}\n"
                    if plain and i % 50 and i % 97 and i % 113 and i not in rejected
                    else line(i)
                    for i in range(low, min(records + 1, low + 100_000))
                )
            )
    return products


# --------------------------------------------------------------------------- the broker


def require_broker(url: str) -> None:
    """Skip (fail with ANTIOOM_REQUIRE_SERVICES=1) if the broker does not answer."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        unavailable(f"broker not reachable at {url}: {type(exc).__name__}: {exc}")


def purge(url: str) -> int:
    """Drop every message waiting in the ``antioom`` queue of the broker at ``url``."""
    from antioom.workers.tasks import app

    with app.connection_for_write(url) as conn:
        return int(app.amqp.TaskConsumer(conn).purge())


def queue_depth(url: str) -> tuple[int, int]:
    """(messages ready, consumers) of the ``antioom`` queue on a RabbitMQ broker."""
    from kombu import Connection

    with Connection(url, connect_timeout=3) as conn:
        found = conn.default_channel.queue_declare(QUEUE, passive=True)
        return int(found.message_count), int(found.consumer_count)


def no_other_consumers(url: str, timeout: float = 10) -> None:
    """Fail unless nothing consumes the queue (a worker left running, or another session's,
    would take this test's jobs): a killed worker's consumer goes as the broker notices."""
    deadline = time.monotonic() + timeout
    while (consumers := queue_depth(url)[1]) and time.monotonic() < deadline:
        time.sleep(0.1)
    if consumers:
        pytest.fail(
            f"{consumers} consumer(s) already take from the {QUEUE!r} queue at {url}: another "
            "antioom worker runs on this broker (the tests need the queue to themselves)"
        )


# --------------------------------------------------------------------------- the workers


class Workers:
    """``antioom worker`` processes on one broker, each in its own process group, its output
    in files of ``folder``; all are killed (and the queue purged) by :meth:`close`."""

    def __init__(self, broker: str, folder: Path, **env: str) -> None:
        self.broker = broker
        self.folder = folder
        self.env = clean_env(**env)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, count: int = 1, concurrency: int = 1) -> list[subprocess.Popen[bytes]]:
        made = []
        for _ in range(count):
            name = f"worker{len(self.started)}"
            with (
                open(self.folder / f"{name}.out", "wb") as out,
                open(self.folder / f"{name}.err", "wb") as err,
            ):
                process = subprocess.Popen(
                    [
                        *antioom_command(),
                        "worker",
                        "--broker",
                        self.broker,
                        "--loglevel",
                        "WARNING",
                        "--concurrency",
                        str(concurrency),
                    ],
                    stdout=out,
                    stderr=err,
                    cwd=self.folder,
                    env=self.env,
                    start_new_session=True,
                )
            self.started.append(process)
            made.append(process)
        return made

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [process for process in self.started if process.poll() is None]

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """kill -9 the worker (and anything it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def logs(self, tail: int = 3000) -> str:
        shown = []
        for index, process in enumerate(self.started):
            err = (self.folder / f"worker{index}.err").read_text("utf-8", "replace")
            lines = [line for line in err.splitlines() if not NOISE.search(line)]
            shown.append(f"--- worker{index} (exit {process.poll()}):\n" + "\n".join(lines)[-tail:])
        return "\n".join(shown)

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                self.kill(process)
        # A killed worker's unacknowledged message went back to the queue: not for the next test.
        purge(self.broker)


def wait_for_consumers(broker: str, count: int, workers: Workers, timeout: float = 30) -> int:
    """Wait until ``count`` consumers take from the queue (RabbitMQ) or a worker exits; returns
    the consumers seen last."""
    deadline = time.monotonic() + timeout
    consumers = 0
    while time.monotonic() < deadline:
        consumers = queue_depth(broker)[1]
        if consumers >= count or len(workers.live()) < len(workers.started):
            return consumers
        time.sleep(0.1)
    return consumers


# --------------------------------------------------------------------------- queuing, waiting


def queue_import(
    path: Path, db: str, staging: str, broker: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``antioom import PATH --queue``: returns the queued record the CLI prints."""
    command = [
        *antioom_command(),
        "import",
        str(path),
        "--db",
        db,
        "--queue",
        "--staging",
        staging,
        "--broker",
        broker,
        "--json",
        *args,
    ]
    done = subprocess.run(
        command, capture_output=True, env=clean_env(**(env or {})), timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    queued: dict[str, Any] = json.loads(done.stdout)
    assert queued["status"] == "queued", queued
    return queued


def record_of(db: str, import_id: str) -> dict[str, Any] | None:
    store = open_store(db)
    try:
        return store.get(import_id)
    finally:
        store.close()


def rejects_of(db: str, import_id: str) -> list[tuple[Any, ...]]:
    """(record, line, column, reason, raw) of the rejects stored for the import."""
    store = open_store(db)
    try:
        return list(store.rejects(import_id))
    finally:
        store.close()


def wait_until_final(
    db: str, import_id: str, workers: Workers, timeout: float = 150
) -> dict[str, Any]:
    """Poll the import's record until its status is final; fail with the workers' logs if it
    is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        record = record_of(db, import_id)
        if record is not None and record["status"] in FINAL:
            return record
        time.sleep(0.2)
    pytest.fail(f"import {import_id} not finished after {timeout}s: {record}\n{workers.logs()}")
