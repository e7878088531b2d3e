"""Flow control: a slow database slows the producer instead of growing memory; cancellation.

A producer thread pushes CSV bytes into a bounded :class:`ByteChannel` (as the upload server
does); the engine reads from it and writes to an artificially slow SQLite sink.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from antioom import ImportCancelled, import_csv
from antioom.engine.batching import Batch
from antioom.engine.datasets import PRODUCTS
from antioom.engine.pipeline import Options, Target, run_import
from antioom.engine.records import Dialect
from antioom.engine.source import ByteChannel, CountingReader
from antioom.sinks.base import WriteResult
from antioom.sinks.postgres import PostgresSink
from antioom.sinks.sqlite import SQLiteSink

ROWS = 200_000
CHUNK = 16 << 10


def products_csv(rows: int) -> bytes:
    lines = "".join(f"SKU-{i},Product Name {i},{i % 1000 + 1}.25\n" for i in range(rows))
    return ("sku,name,price\n" + lines).encode()


@dataclass
class Producer:
    """Sends ``data`` into ``channel`` in chunks from a thread, recording how far it got."""

    channel: ByteChannel
    data: bytes
    sent: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self.data), CHUNK):
                piece = self.data[start : start + CHUNK]
                self.channel.send_blocking(piece)
                self.sent += len(piece)
            self.channel.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread


class SlowSink(SQLiteSink):
    """SQLite, but every batch takes ``delay`` seconds longer; notes what it saw per write."""

    def __init__(self, url: str, delay: float, producer: Producer) -> None:
        super().__init__(url)
        self.delay = delay
        self.producer = producer
        self.seen: list[tuple[int, bool, int]] = []  # (bytes sent, producer done, high water)

    def write(self, batch: Batch) -> WriteResult:
        channel = self.producer.channel
        self.seen.append((self.producer.sent, self.producer.done.is_set(), channel.high_water))
        time.sleep(self.delay)
        return super().write(batch)


def test_a_slow_database_throttles_the_producer(sqlite_url):
    data = products_csv(ROWS)  # about 7 MB
    channel = ByteChannel(max_bytes=64 << 10)
    producer = Producer(channel, data)
    sink = SlowSink(sqlite_url, delay=0.02, producer=producer)
    thread = producer.start()
    try:
        summary = run_import(
            CountingReader(channel),
            sink,
            Target(dataset=PRODUCTS),
            Options(dialect=Dialect(max_record_bytes=64 << 10), batch_size=5_000),
        )
    finally:
        channel.abandon()
        thread.join(10)
        sink.close()
    assert producer.error is None
    assert summary.processed == ROWS
    writes = len(sink.seen)
    assert writes == ROWS // 5_000
    # While the database works through the batches, the producer waits for it...
    assert not any(done for _, done, _ in sink.seen[: writes // 2])
    # ...and is never far ahead of what has been written.
    for index, (sent, _, _) in enumerate(sink.seen[: writes // 2]):
        written = index * 5_000 * (len(data) / ROWS)
        assert sent - written < 2 << 20, f"producer {sent - written:.0f} bytes ahead at {index}"
    assert all(high <= channel.max_bytes for _, _, high in sink.seen)
    assert channel.high_water <= channel.max_bytes


def test_a_blocked_producer_is_woken_by_abandon():
    channel = ByteChannel(max_bytes=1024)
    producer = Producer(channel, b"x" * 100_000)
    thread = producer.start()
    deadline = time.monotonic() + 5
    while channel.buffered < 1024 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert channel.buffered == 1024
    assert not producer.done.is_set(), "the producer should be blocked on a full channel"
    channel.abandon()
    thread.join(2)
    assert producer.done.is_set()
    assert isinstance(producer.error, ImportCancelled)
    with pytest.raises(ImportCancelled):
        channel.send_blocking(b"more")


def test_a_producer_error_ends_the_import_with_that_error(sqlite_url):
    data = products_csv(20_000)
    channel = ByteChannel(max_bytes=8 << 20)
    channel.send_blocking(data[: len(data) // 2])
    channel.close(ImportCancelled("the client went away"))
    with SQLiteSink(sqlite_url) as sink, pytest.raises(ImportCancelled, match="went away") as info:
        run_import(
            CountingReader(channel),
            sink,
            Target(dataset=PRODUCTS),
            Options(dialect=Dialect(max_record_bytes=64 << 10), batch_size=1_000),
        )
    summary = info.value.summary  # type: ignore[attr-defined]
    assert summary.status == "aborted"
    assert 0 < summary.processed < 20_000


def test_a_producer_error_while_the_header_is_read_is_an_abort_too(sqlite_url):
    channel = ByteChannel(max_bytes=64 << 10)
    channel.send_blocking(b"sku,name,price\nA,a,1\n")
    channel.close(ImportCancelled("the client went away"))
    with SQLiteSink(sqlite_url) as sink, pytest.raises(ImportCancelled, match="went away") as info:
        run_import(CountingReader(channel), sink, Target(dataset=PRODUCTS))
    assert info.value.summary.status == "aborted"  # type: ignore[attr-defined]


def test_cancel_stops_the_import_at_a_batch_boundary(write_csv, sqlite_url, fetch):
    cancel = threading.Event()

    def on_progress(event):
        if event.processed >= 30:
            cancel.set()

    with pytest.raises(ImportCancelled) as info:
        import_csv(
            write_csv(products_csv(1_000)),
            sqlite_url,
            dataset="products",
            batch_size=10,
            on_progress=on_progress,
            cancel=cancel,
        )
    summary = info.value.summary  # type: ignore[attr-defined]
    assert summary.status == "aborted"
    assert summary.processed == 30
    assert fetch(sqlite_url, "SELECT count(*) FROM products") == [(30,)]


def test_cancel_before_the_first_batch_writes_nothing(write_csv, sqlite_url, fetch):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ImportCancelled) as info:
        import_csv(write_csv(products_csv(100)), sqlite_url, dataset="products", cancel=cancel)
    assert info.value.summary.processed == 0  # type: ignore[attr-defined]
    assert fetch(sqlite_url, "SELECT count(*) FROM products") == [(0,)]


class SlowPostgresSink(PostgresSink):
    """PostgreSQL, every batch ``delay`` seconds slower; several share one ``seen`` list."""

    def __init__(self, url: str, delay: float, producer: Producer, seen: list[int]) -> None:
        super().__init__(url)
        self.delay = delay
        self.producer = producer
        self.seen = seen  # bytes sent when each write began

    def write(self, batch: Batch) -> WriteResult:
        self.seen.append(self.producer.sent)
        time.sleep(self.delay)
        return super().write(batch)


def test_writers_of_key_partitions_throttle_the_producer_too(pg_url):
    """Two writers, each with its own queue of two batches: the parser still waits for the
    database, so the producer stays within a few batches of what has been written."""
    data = products_csv(ROWS)
    channel = ByteChannel(max_bytes=64 << 10)
    producer = Producer(channel, data)
    seen: list[int] = []
    sink = SlowPostgresSink(pg_url, 0.02, producer, seen)
    thread = producer.start()
    try:
        summary = run_import(
            CountingReader(channel),
            sink,
            Target(dataset=PRODUCTS),
            Options(dialect=Dialect(max_record_bytes=64 << 10), batch_size=5_000, writers=2),
            open_writer=lambda: SlowPostgresSink(pg_url, 0.02, producer, seen),
        )
    finally:
        channel.abandon()
        thread.join(10)
        sink.close()
    assert producer.error is None
    assert "written by 2 connections side by side, keys partitioned" in summary.notes
    assert summary.processed == ROWS
    assert len(seen) >= ROWS // 5_000
    for index, sent in enumerate(seen[: len(seen) // 2]):
        written = index * 5_000 * (len(data) / ROWS)
        assert sent - written < 2 << 20, f"producer {sent - written:.0f} bytes ahead at {index}"
