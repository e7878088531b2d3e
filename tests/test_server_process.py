"""The HTTP service for real: ``antioom serve`` in a subprocess driven by curl and httpx, and an
in-process uvicorn whose database is artificially slow (backpressure over real TCP)."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from conftest import antioom_command, clean_env
from server_helpers import (
    HEADER,
    RssSampler,
    Served,
    curl,
    free_port,
    generate_products,
    products_csv,
    serve,
    uvicorn_thread,
    wait_record,
)

import antioom.server.app as server_app
from antioom.engine.batching import Batch
from antioom.server import Settings, create_app
from antioom.sinks.base import Sink, WriteResult
from antioom.sinks.sqlite import SQLiteSink
from antioom.sinks.sqlite_connection import connect as connect_sqlite

# Streaming 100 MB through the server may grow its RSS by at most this much (measured 37-57 MB).
RSS_GROWTH_MB = 96


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("served")) as served:
        yield served


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_products(tmp_path_factory.mktemp("big") / "products-100MB.csv", "100MB")


@pytest.fixture(scope="module")
def medium_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_products(tmp_path_factory.mktemp("medium") / "products-20MB.csv", "20MB")


def record(served: Served, import_id: str) -> dict[str, Any]:
    response = httpx.get(f"{served.url}/imports/{import_id}", timeout=5)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def curl_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# --------------------------------------------------------------------------- curl


def test_curl_multipart_raw_and_gzip(server: Served, tmp_path: Path) -> None:
    plain = tmp_path / "p.csv"
    plain.write_bytes(products_csv(1000, start=0, bad_every=100))
    packed = tmp_path / "p.csv.gz"
    packed.write_bytes(gzip.compress(products_csv(1000, start=1000)))

    form = curl_json(
        curl("-F", f"file=@{plain}", "-H", "X-Import-Id: curl-form", f"{server.url}/upload")
    )
    raw = curl_json(
        curl(
            "--data-binary",
            f"@{plain}",
            "-H",
            "Content-Type: text/csv",
            "-H",
            "X-Import-Id: curl-raw",
            f"{server.url}/imports?table=plain",
        )
    )
    gz = curl_json(
        curl(
            "--data-binary",
            f"@{packed}",
            "-H",
            "Content-Type: text/csv",
            "-H",
            "Content-Encoding: gzip",
            "-H",
            "X-Import-Id: curl-gz",
            f"{server.url}/imports?dataset=products",
        )
    )
    again = curl(
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        f"@{plain}",
        "-H",
        "Content-Type: text/csv",
        "-H",
        "X-Import-Id: curl-raw",
        f"{server.url}/imports?table=plain",
    )

    assert form["message"] == "Upload completed"
    assert form["stats"] == {"processed": 990, "failed": 10}
    assert (raw["status"], raw["table"], raw["processed"]) == ("completed", "plain", 1000)
    assert (gz["status"], gz["processed"], gz["failed"]) == ("completed", 1000, 0)
    assert again.stdout == "409"
    for import_id, processed in (("curl-form", 990), ("curl-raw", 1000), ("curl-gz", 1000)):
        stored = record(server, import_id)
        assert (stored["status"], stored["processed"]) == ("completed", processed)
    rejects = httpx.get(f"{server.url}{form['rejects_url']}", timeout=5).text.splitlines()
    assert len(rejects) == 1 + 10


def test_curl_bad_header_gets_400_json(server: Served, tmp_path: Path) -> None:
    """A large body whose header is wrong: the server answers 400 before reading it all."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id,title\n" + b"1,x\n" * 2_000_000)
    result = curl(
        "-s",
        "-w",
        "\n%{http_code}",
        "-T",
        bad,
        "-X",
        "POST",
        "-H",
        "Content-Type: text/csv",
        f"{server.url}/upload",
    )
    body, _, code = result.stdout.rpartition("\n")
    assert code == "400", (result.stdout[-500:], result.stderr)
    assert "price" in json.loads(body)["error"]


# --------------------------------------------------------------------------- CSV options


def post_csv(served: Served, query: str, body: bytes, import_id: str) -> httpx.Response:
    return httpx.post(
        f"{served.url}/imports?{query}",
        content=body,
        headers={"content-type": "text/csv", "X-Import-Id": import_id},
        timeout=60,
    )


def test_dialect_options_in_the_query(server: Served, fetch: Any) -> None:
    body = b"1;Apple, red;1.5\n2;Pear;2\n3;Fig;\n"
    response = post_csv(
        server, "table=opt_semi&delimiter=;&header=false&columns=a,b,c", body, "opt-semi"
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["status"], data["processed"], data["failed"]) == ("completed", 3, 0)
    dialect = data["dialect"]
    assert (dialect["delimiter"], dialect["header"]) == (";", False)
    assert "delimiter" not in dialect["detected"] and "header" not in dialect["detected"]
    assert data["notes"] == []
    rows = fetch(server.db_url, 'SELECT a, b, c FROM "opt_semi" ORDER BY a')
    assert rows == [(1, "Apple, red", 1.5), (2, "Pear", 2.0), (3, "Fig", None)]


def test_a_semicolon_file_without_options_is_sniffed(server: Served, fetch: Any) -> None:
    body = "id;name;price\n1;Äpfel, rot;1,5\n2;Birnen;2,25\n3;Kiwi;3\n".encode()
    response = post_csv(server, "table=opt_sniffed", body, "opt-sniffed")
    assert response.status_code == 200, response.text
    dialect = response.json()["dialect"]
    assert (dialect["delimiter"], dialect["header"], dialect["encoding"]) == (";", True, "utf-8")
    assert {"delimiter", "header", "encoding"} <= set(dialect["detected"])
    rows = fetch(server.db_url, 'SELECT id, name, price FROM "opt_sniffed" ORDER BY id')
    assert rows == [(1, "Äpfel, rot", "1,5"), (2, "Birnen", "2,25"), (3, "Kiwi", "3")]


def held_open_post(served: Served, query: str, first: bytes, wait_s: float) -> bytes:
    """POST a chunked body over a raw socket: send ``first``, never end the body, and return
    what the server answered within ``wait_s`` (b"" for nothing)."""
    url = urlsplit(served.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    head = (
        f"POST /imports?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    received = b""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(head + f"{len(first):x}\r\n".encode() + first + b"\r\n")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            head_part, sep, rest = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head_part)
            if sep and length and len(rest) >= int(length.group(1)):
                break
    return received


def test_a_bad_option_is_400_before_the_body_is_read(server: Served) -> None:
    first = b"a;b\n" + b"1;2\n" * 16_000  # 64 KB of a body that never ends
    started = time.monotonic()
    answer = held_open_post(server, "table=opt_bad&delimiter=;;", first, wait_s=10)
    elapsed = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    error = json.loads(body)["error"]
    assert error == "delimiter must be one character, got ';;'"
    assert elapsed < 5
    # The same request with good options waits for the rest of the body: no early answer.
    assert held_open_post(server, "table=opt_good&delimiter=;", first, wait_s=1.0) == b""

    for query, words in (
        ("table=t&encoding=klingon", "unknown encoding"),
        ("table=t&quote=ab", "quote"),
        ("table=t&skip=-1", "negative"),
        ("table=t&header=perhaps", "header"),
        ("table=t&type=zip", "NAME=TYPE"),
        ("table=t&type=zip=postcode", "unknown type"),
        ("dataset=products&type=price=string", "table imports"),
    ):
        response = post_csv(server, query, b"a,b\n1,2\n", f"opt-bad-{len(query)}")
        assert response.status_code == 400, (query, response.text)
        message = response.json()["error"]
        assert words in message and "\n" not in message, (query, message)


def test_encoding_option_reads_latin1(server: Served, fetch: Any) -> None:
    body = "name,city\nJosé,Zürich\nRenée,Köln\nÅsa,Malmö\n".encode("latin-1")
    guessed = post_csv(server, "table=opt_latin_guess", body, "opt-latin-guess")
    assert guessed.status_code == 400  # not UTF-8: the server says which option to pass
    assert "encoding" in guessed.json()["error"]
    response = post_csv(server, "table=opt_latin&encoding=latin-1", body, "opt-latin")
    assert response.status_code == 200, response.text
    dialect = response.json()["dialect"]
    assert dialect["encoding"] in ("iso8859-1", "latin-1") and "encoding" not in dialect["detected"]
    rows = fetch(server.db_url, 'SELECT name, city FROM "opt_latin" ORDER BY city')
    assert rows == [("Renée", "Köln"), ("Åsa", "Malmö"), ("José", "Zürich")]


def test_type_option_keeps_leading_zeros(server: Served, fetch: Any) -> None:
    # The sample shows five-digit numbers; the zip with a leading zero comes far later.
    lines = b"".join(b"%05d,%d\n" % (10_000 + i % 89_999, i) for i in range(300_000))
    body = b"zip,qty\n" + lines + b"00501,-1\n"
    inferred = post_csv(server, "table=opt_zip_inferred", body, "opt-zip-inferred")
    forced = post_csv(server, "table=opt_zip&type=zip=string", body, "opt-zip")
    assert inferred.status_code == 200 and forced.status_code == 200, forced.text
    assert (inferred.json()["processed"], inferred.json()["failed"]) == (300_000, 1)
    assert (forced.json()["processed"], forced.json()["failed"]) == (300_001, 0)
    assert fetch(server.db_url, 'SELECT zip FROM "opt_zip" WHERE qty = -1') == [("00501",)]
    assert fetch(server.db_url, 'SELECT zip FROM "opt_zip" WHERE qty = 1') == [("10001",)]
    text = post_csv(server, "table=opt_text&infer=false", b"zip,qty\n007,1\n", "opt-text")
    assert text.status_code == 200, text.text
    assert fetch(server.db_url, 'SELECT zip, qty FROM "opt_text"') == [("007", "1")]


def test_seed_upload_takes_the_options_too(server: Served, fetch: Any, tmp_path: Path) -> None:
    path = tmp_path / "tabbed.csv"
    path.write_bytes(b"# exported\nsku\tname\tprice\nT-1\tTab, one\t1.5\nT-2\tTwo\t-2\n")
    data = curl_json(
        curl(
            "-F",
            f"file=@{path}",
            "-H",
            "X-Import-Id: opt-seed",
            f"{server.url}/upload?delimiter=%09&comment=%23",
        )
    )
    assert data["message"] == "Upload completed"
    assert data["stats"] == {"processed": 1, "failed": 1}  # a price <= 0 breaks the rules
    assert data["dialect"]["delimiter"] == "\t" and "delimiter" not in data["dialect"]["detected"]
    rows = fetch(server.db_url, "SELECT sku, name, price FROM products WHERE sku LIKE 'T-%'")
    assert rows == [("T-1", "Tab, one", 1.5)]
    escaped = httpx.post(
        f"{server.url}/imports?table=opt_tab&delimiter=\\t&null=NULL,NA",
        content=b"a\tb\n1\tx,y\n2\tNULL\n3\tNA\n",
        headers={"content-type": "text/csv"},
        timeout=30,
    )
    assert escaped.status_code == 200, escaped.text
    rows = fetch(server.db_url, 'SELECT a, b FROM "opt_tab" ORDER BY a')
    assert rows == [(1, "x,y"), (2, None), (3, None)]


# --------------------------------------------------------------------------- big uploads


def test_large_upload_streams_in_flat_memory(tmp_path: Path, big_csv: Path) -> None:
    with serve(tmp_path) as served, RssSampler(served.pid) as rss:
        started = time.monotonic()
        result = curl(
            "-F", f"file=@{big_csv}", "-H", "X-Import-Id: big", f"{served.url}/upload", timeout=110
        )
        elapsed = time.monotonic() - started
    data = curl_json(result)
    print(
        f"\n100 MB upload: {elapsed:.1f}s; server RSS start {rss.start:.1f} MB, "
        f"peak {rss.peak:.1f} MB, growth {rss.growth:.1f} MB ({len(rss.samples)} samples)"
    )
    assert data["status"] == "completed"
    assert data["processed"] > 2_500_000 and data["failed"] == 0
    assert data["bytes"] == big_csv.stat().st_size
    assert rss.growth < RSS_GROWTH_MB


def test_client_abort_is_recorded_and_server_keeps_serving(server: Served, big_csv: Path) -> None:
    upload = subprocess.Popen(
        [
            "curl",
            "-sS",
            "--limit-rate",
            "2M",
            "-F",
            f"file=@{big_csv}",
            "-H",
            "X-Import-Id: abort-me",
            f"{server.url}/upload",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
    finally:
        upload.kill()
        upload.wait(5)
    killed = time.monotonic()
    aborted = wait_record(server, "abort-me", ("aborted", "failed", "completed"), timeout=5)
    print(f"\nabort recorded {time.monotonic() - killed:.2f}s after the client died: {aborted}")
    assert aborted["status"] == "aborted"
    assert aborted["processed"] >= 0
    assert aborted["finished_at"]
    health = httpx.get(f"{server.url}/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["memory"]["imports_in_flight"] == 0
    small = httpx.post(
        f"{server.url}/upload",
        content=products_csv(5),
        headers={"content-type": "text/csv"},
        timeout=10,
    )
    assert small.status_code == 200


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any], float]]:
    """(event name, data, arrival time) for each event of a text/event-stream."""
    event, data = "message", ""
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads(data), time.monotonic()
            event, data = "message", ""
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def test_sse_of_one_import(server: Served, medium_csv: Path) -> None:
    upload = subprocess.Popen(
        [
            "curl",
            "-sS",
            "-F",
            f"file=@{medium_csv}",
            "-H",
            "X-Import-Id: sse-1",
            f"{server.url}/upload",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_record(server, "sse-1", ("running",), timeout=10)
        events: list[tuple[str, dict[str, Any], float]] = []
        with httpx.stream("GET", f"{server.url}/imports/sse-1/events", timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events.extend(parse_sse(response.iter_lines()))
        ended = time.monotonic()
        out, _ = upload.communicate(timeout=60)
    finally:
        if upload.poll() is None:
            upload.kill()
    assert json.loads(out)["status"] == "completed"
    names = [name for name, _, _ in events]
    times = [round(at - events[0][2], 3) for _, _, at in events]
    print(f"\nSSE events: {len(events)} at {times}: {names[:2]}...{names[-2:]}")
    first, last = events[0], events[-1]
    assert first[0] == "progress" and first[1]["status"] == "running"
    assert last[0] == "completed" and last[1]["status"] == "completed"
    assert names.count("completed") == 1
    assert set(names[:-1]) == {"progress"}
    assert len(events) >= 3, "a 20 MB import should report progress more than once"
    gaps = [b[2] - a[2] for a, b in itertools.pairwise(events[:-1])]
    assert all(gap >= 0.2 for gap in gaps), gaps  # 250 ms apart, with slack for delivery
    processed = [data["processed"] for _, data, _ in events]
    assert processed == sorted(processed)
    assert last[1]["processed"] == json.loads(out)["processed"]
    assert ended - last[2] < 1.0  # the stream ended right after the final event
    for key in ("id", "processed", "failed", "memoryMB", "timestamp", "status"):
        assert key in first[1]


def test_global_event_feed(server: Served) -> None:
    seen: list[dict[str, Any]] = []

    def listen() -> None:
        with httpx.stream("GET", f"{server.url}/events", timeout=10) as response:
            for _, data, _ in parse_sse(response.iter_lines()):
                seen.append(data)
                if data["status"] == "completed" and data["id"] == "global-1":
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.3)
    response = httpx.post(
        f"{server.url}/upload",
        content=products_csv(100),
        headers={"content-type": "text/csv", "X-Import-Id": "global-1"},
        timeout=10,
    )
    listener.join(10)
    assert response.status_code == 200
    assert seen and seen[-1]["id"] == "global-1"
    for key in ("processed", "failed", "memoryMB", "timestamp", "id", "status"):
        assert key in seen[-1]


def test_serve_refuses_public_address_without_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *antioom_command(),
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "API" in lines[0] and "0.0.0.0" in lines[0]


# --------------------------------------------------------------------------- backpressure


class SlowSink(SQLiteSink):
    """SQLite that takes ``delay_s`` longer per batch: a database slower than the client.
    Notes how many bytes the client had sent when each write began."""

    delay_s = 0.1
    sent_at_writes: ClassVar[list[int]] = []
    body: ClassVar[TimedBody | None] = None

    def write(self, batch: Batch) -> WriteResult:
        if self.body is not None:
            self.sent_at_writes.append(self.body.sent)
        time.sleep(self.delay_s)
        return super().write(batch)


@dataclass
class TimedBody:
    """A streamed products body generated on the fly, recording when each chunk was taken."""

    rows: int
    chunk_rows: int = 2000
    taken: list[tuple[float, int]] = field(default_factory=list)
    sent: int = 0

    def __iter__(self) -> Iterator[bytes]:
        yield HEADER
        for start in range(0, self.rows, self.chunk_rows):
            chunk = products_csv(self.chunk_rows, start=start)[len(HEADER) :]
            self.sent += len(chunk)
            self.taken.append((time.monotonic(), self.sent))
            yield chunk


def test_slow_database_throttles_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def open_slow(url: str) -> Sink:
        return SlowSink(url)

    monkeypatch.setattr(server_app, "open_sink", open_slow)
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'slow.db'}", batch_size=20_000)
    app = create_app(settings)
    body = TimedBody(rows=900_000)  # ~30 MB
    monkeypatch.setattr(SlowSink, "body", body)
    monkeypatch.setattr(SlowSink, "sent_at_writes", [])
    high_water: list[int] = []
    max_bytes: list[int] = []
    result: dict[str, Any] = {}
    process = psutil.Process()
    rss_start = rss_peak = process.memory_info().rss / (1 << 20)
    with uvicorn_thread(app) as url:

        def upload() -> None:
            result["response"] = httpx.post(
                f"{url}/imports?dataset=products",
                content=iter(body),
                headers={"content-type": "text/csv", "X-Import-Id": "slow"},
                timeout=120,
            )

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        registry = app.state.registry
        while uploader.is_alive():
            live = registry.imports.get("slow")
            if live is not None:
                high_water.append(live.channel.high_water)
                max_bytes.append(live.channel.max_bytes)
            rss_peak = max(rss_peak, process.memory_info().rss / (1 << 20))
            time.sleep(0.05)
        uploader.join()
    response = result["response"]
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["processed"] == 900_000
    batches = data["batches"]
    sending = body.taken[-1][0] - body.taken[0][0]
    total = body.taken[-1][1]
    print(
        f"\nslow sink: {total / 2**20:.1f} MB in {batches} batches; client took {sending:.1f}s "
        f"to send (import {data['duration_s']}s); channel high water {max(high_water)} of "
        f"{max_bytes[0]}; test-process RSS growth {rss_peak - rss_start:.1f} MB"
    )
    # Unthrottled, localhost swallows 30 MB before the first batch is written. Throttled, the
    # client runs ahead of what is written only by the buffers: socket buffers (up to ~10 MB
    # on localhost), the channel (4 MiB), Arrow's read-ahead (3 MiB) and the batch queue.
    per_batch = total / batches
    ahead = [sent - index * per_batch for index, sent in enumerate(SlowSink.sent_at_writes)]
    assert len(ahead) == batches
    print(f"client at most {max(ahead[: batches // 2]) / 2**20:.1f} MB ahead of the writes")
    assert max(ahead[: batches // 2]) < 22 << 20
    assert high_water and max(high_water) <= max_bytes[0]
    assert rss_peak - rss_start < RSS_GROWTH_MB


class BlockedSink(SQLiteSink):
    """SQLite whose writes wait until ``released`` is set: a database that hangs."""

    released = threading.Event()

    def write(self, batch: Batch) -> WriteResult:
        self.released.wait(30)
        return super().write(batch)


def test_health_answers_while_every_import_waits_on_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More stuck imports than the default executor has workers: the server still answers."""
    workers = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor size
    imports = workers + 1
    BlockedSink.released = threading.Event()

    def open_blocked(url: str) -> Sink:
        return BlockedSink(url)

    monkeypatch.setattr(server_app, "open_sink", open_blocked)
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'blocked.db'}",
        batch_size=1000,
        channel_bytes=256 << 10,
        max_concurrent_imports=imports,
    )
    app = create_app(settings)
    chunk = products_csv(2000)[len(HEADER) :]
    responses: list[httpx.Response] = []

    def upload(i: int) -> None:
        def body() -> Iterator[bytes]:
            yield HEADER
            for _ in range(100):  # ~6.5 MB: more than the channel, queue and socket buffers
                yield chunk

        responses.append(
            httpx.post(
                f"{url}/imports?table=blocked{i}&mode=insert",
                content=body(),
                headers={"content-type": "text/csv"},
                timeout=60,
            )
        )

    with uvicorn_thread(app) as url:
        uploaders = [
            threading.Thread(target=upload, args=(i,), daemon=True) for i in range(imports)
        ]
        try:
            for thread in uploaders:
                thread.start()
            registry = app.state.registry
            deadline = time.monotonic() + 20
            while not (
                len(registry.imports) == imports
                and all(
                    live.channel.buffered > settings.channel_bytes // 2
                    for live in registry.imports.values()
                )
            ):
                assert time.monotonic() < deadline, "the uploads did not fill their channels"
                time.sleep(0.05)
            time.sleep(0.3)  # every upload handler now waits for room in its channel
            started = time.monotonic()
            health = httpx.get(f"{url}/health", timeout=5)
            listing = httpx.get(f"{url}/imports", timeout=5)
            answered = time.monotonic() - started
        finally:
            BlockedSink.released.set()
            for thread in uploaders:
                thread.join(60)
    print(f"\n{imports} imports stuck on the database: /health + /imports took {answered:.2f}s")
    assert health.status_code == 200 and listing.status_code == 200
    assert listing.json()["total"] == imports
    assert answered < 2
    assert [r.status_code for r in responses] == [200] * imports


def test_concurrent_uploads_share_one_sqlite_file_intact(tmp_path: Path) -> None:
    """Four uploads at once into one SQLite file of a real server — inserts and an upsert, small
    batches so their transactions interleave, the dashboard's listing polled meanwhile: every
    row lands once, every record completes, and SQLite finds the file intact. (Two copies of
    SQLite in one process once corrupted such a file: everything runs on ADBC's one copy.)"""
    rows = 30_000
    with serve(tmp_path, env={"ANTIOOM_BATCH_SIZE": "1000"}) as served:
        bodies = {f"part-{i}": products_csv(rows, start=i * rows) for i in range(3)}
        bodies["again"] = products_csv(rows, start=0).replace(b".25\n", b".50\n")  # upsert
        results: dict[str, httpx.Response] = {}

        def upload(import_id: str) -> None:
            mode = "upsert" if import_id == "again" else "insert"
            results[import_id] = httpx.post(
                f"{served.url}/imports?dataset=products&mode={mode}",
                content=bodies[import_id],
                headers={"content-type": "text/csv", "X-Import-Id": import_id},
                timeout=120,
            )

        threads = [threading.Thread(target=upload, args=(name,)) for name in bodies]
        for thread in threads:
            thread.start()
        listings = 0
        while any(thread.is_alive() for thread in threads):
            assert httpx.get(f"{served.url}/imports", timeout=10).status_code == 200
            listings += 1
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        records = [record(served, name) for name in bodies]
        rejects = httpx.get(f"{served.url}/imports/part-0/rejects", timeout=10).text

    for name, response in results.items():
        assert response.status_code == 200, (name, response.text)
    # part-0 inserts the keys the upsert writes beside it: those the upsert wrote first are
    # part-0's duplicate-key rejects; every other row of every upload was committed.
    assert [(r["status"], r["processed"], r["failed"]) for r in records[1:]] == [
        ("completed", rows, 0)
    ] * 3
    first = records[0]
    assert (first["status"], first["processed"] + first["failed"]) == ("completed", rows)
    assert rejects.count("duplicate key") == min(first["failed"], 10_000)  # 10,000 kept
    path = served.db_url.removeprefix("sqlite:///")
    with connect_sqlite(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT sku) FROM products"
        ).fetchall()[0]
        prices = dict(conn.execute("SELECT sku, price FROM products").fetchall())
    # The upsert of part-0's keys ran beside part-0's insert: either may have landed a key
    # first (the other then refused or updated it), so a part-0 key holds one of the two.
    assert (count, distinct) == (3 * rows, 3 * rows)
    for i in range(3 * rows):
        base = i % 1000 + 1
        allowed = {base + 0.25, base + 0.5} if i < rows else {base + 0.25}
        assert prices[f"SKU-{i}"] in allowed, (i, prices[f"SKU-{i}"])
    assert listings > 0
