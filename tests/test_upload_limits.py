"""Uploads that are cut short, too big once decompressed, stalled, or malformed, against a real
``antioom serve`` (curl, httpx, raw sockets) and the real CLI.

The rule under test: every row ends committed exactly as written, or the import fails; a cut-off
last record is never stored, and no client can hold memory or an import slot it should not.
"""

from __future__ import annotations

import gzip
import json
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
import pytest
from conftest import antioom_command, clean_env
from server_helpers import RssSampler, Served, curl, products_csv, serve

from antioom.server import Settings
from antioom.sinks.sqlite_connection import connect as connect_sqlite

BOUNDARY = "cut-here-0123456789"
IDLE_S = 1.0
TRIALS = 6  # random cuts per kind of input


def rows_csv(rows: int) -> bytes:
    """A CSV whose last field is long, so that most cuts land inside a row's last value: the
    case where a cut-off record would still have the right number of fields."""
    lines = [f"{i},name {i},{'description of the row number ' * 2}{i}\n" for i in range(rows)]
    return b"id,name,note\n" + "".join(lines).encode()


DATA = rows_csv(20_000)  # ~1.4 MB
ROWS = {tuple(line.split(",")) for line in DATA.decode().splitlines()[1:]}


def multipart(data: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n'
            f"Content-Type: text/csv\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def zstd(data: bytes) -> bytes:
    packed: bytes = pa.Codec("zstd").compress(data, asbytes=True)
    return packed


def stored_rows(db_path: Path, table: str) -> list[tuple[str, ...]]:
    """Every row of ``table`` (none if it was never created)."""
    with connect_sqlite(str(db_path)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
            return []
        return [tuple(row) for row in conn.execute(f'SELECT id, name, note FROM "{table}"')]


def assert_only_whole_rows(db_path: Path, table: str) -> int:
    rows = stored_rows(db_path, table)
    partial = [row for row in rows if row not in ROWS]
    assert not partial, f"{table}: stored a cut-off row {partial[:1]}"
    assert len(set(rows)) == len(rows)
    return len(rows)


def one_line_error(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    return error


def cuts(size: int, seed: int, low: int = 1) -> list[int]:
    rng = random.Random(seed)
    return sorted(rng.randrange(low, size) for _ in range(TRIALS))


def db_path(served: Served) -> Path:
    return Path(urlsplit(served.db_url).path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {
        "ANTIOOM_RATE_LIMIT_PER_MINUTE": "0",
        "ANTIOOM_BATCH_SIZE": "1000",  # batches commit before the cut
        "ANTIOOM_BODY_IDLE_TIMEOUT_S": str(IDLE_S),
    }
    with serve(tmp_path_factory.mktemp("limits"), env=env) as served:
        yield served


def post(served: Served, query: str, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        f"{served.url}/imports?{query}",
        content=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )


# --------------------------------------------------------------------------- truncation


def test_truncated_multipart_fails_and_never_stores_a_cut_row(server: Served) -> None:
    body = multipart(DATA)
    closing = len(f"\r\n--{BOUNDARY}--\r\n")
    # random cuts in the data, plus the two that keep every data byte but lose the closing "--"
    points = [*cuts(len(body) - closing, seed=8), len(body) - 4, len(body) - 3]
    for n, cut in enumerate(points):
        table = f"mp{n}"
        piece = body[:cut]
        # every other trial is chunked (no Content-Length): the body just ends early
        content = piece if n % 2 else iter([piece[i : i + 65536] for i in range(0, cut, 65536)])
        response = httpx.post(
            f"{server.url}/imports?table={table}&infer=false",
            content=content,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            timeout=30,
        )
        assert response.status_code == 400, (cut, response.text)
        assert response.json()["status"] == "failed"
        error = one_line_error(response)
        assert "truncated multipart body" in error or "no 'file' field" in error, error
        assert_only_whole_rows(db_path(server), table)
    whole = post(
        server, "table=mp_whole&infer=false", body, f"multipart/form-data; boundary={BOUNDARY}"
    )
    assert whole.status_code == 200, whole.text
    assert assert_only_whole_rows(db_path(server), "mp_whole") == len(ROWS)


@pytest.mark.parametrize(("codec", "pack"), [("gzip", gzip.compress), ("zstd", zstd)])
def test_truncated_compressed_upload_fails(
    server: Served, codec: str, pack: Callable[[bytes], bytes]
) -> None:
    packed = pack(DATA)
    for n, cut in enumerate(cuts(len(packed), seed=5, low=4)):
        table = f"{codec}{n}"
        response = post(
            server, f"table={table}&infer=false", packed[:cut], "application/octet-stream"
        )
        assert response.status_code == 400, (cut, response.text)
        assert response.json()["status"] == "failed"
        assert f"the {codec} input is truncated or corrupt" in one_line_error(response)
        assert_only_whole_rows(db_path(server), table)


@pytest.mark.parametrize(("suffix", "pack"), [(".gz", gzip.compress), (".zst", zstd)])
def test_cli_import_of_a_truncated_compressed_file_exits_3(
    tmp_path: Path, suffix: str, pack: Callable[[bytes], bytes]
) -> None:
    packed = pack(DATA)
    database = tmp_path / "cli.db"
    for n, cut in enumerate(cuts(len(packed), seed=3, low=4)[:3]):
        path = tmp_path / f"cut{n}.csv{suffix}"
        path.write_bytes(packed[:cut])
        table = f"t{n}"
        result = subprocess.run(
            [*antioom_command(), "import", str(path), "--db", f"sqlite:///{database}",
             "--table", table, "--no-infer", "--batch-size", "1000", "--quiet"],
            capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 3, (cut, result.stderr)
        assert "truncated or corrupt" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert_only_whole_rows(database, table)


# --------------------------------------------------------------------------- limits


def test_decompressed_size_limit_defaults_to_100x_the_upload_limit_capped() -> None:
    assert Settings(max_upload_bytes=1 << 20).max_decompressed_bytes == 100 << 20
    assert Settings(max_upload_bytes=1 << 40).max_decompressed_bytes == 100 << 30
    assert Settings(max_decompressed_bytes=5).max_decompressed_bytes == 5


@pytest.mark.parametrize(("codec", "pack"), [("gzip", gzip.compress), ("zstd", zstd)])
def test_a_compression_bomb_is_413(
    tmp_path: Path, codec: str, pack: Callable[[bytes], bytes]
) -> None:
    # 64 KiB uploads: the default decompressed limit is 6.4 MB; the bomb is 20 MB of CSV
    bomb = pack(b"id,name\n" + b"1,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" * 550_000)
    assert len(bomb) < 64 << 10
    env = {"ANTIOOM_RATE_LIMIT_PER_MINUTE": "0", "ANTIOOM_MAX_UPLOAD_BYTES": str(64 << 10)}
    with serve(tmp_path, env=env) as served:
        response = post(served, "table=bomb", bomb, "application/octet-stream")
    assert response.status_code == 413, response.text
    assert response.json()["status"] == "failed"
    assert "decompresses to more than 6553600 bytes" in one_line_error(response)


def send_oversized_head(
    served: Served, head: bytes, filler: bytes, limit: int
) -> tuple[int, bytes]:
    """Send ``head`` then ``filler`` repeatedly (up to ``limit`` bytes) as one request head;
    returns how much was sent before the server stopped it, and its answer."""
    url = urlsplit(served.url)
    sent = 0
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        try:
            sock.sendall(head)
            while sent < limit:
                sock.sendall(filler)
                sent += len(filler)
        except OSError:  # reset: the server closed the connection
            pass
        try:
            return sent, sock.recv(4096)
        except OSError:
            return sent, b""


def test_oversized_request_heads_are_refused_in_bounded_memory(server: Served) -> None:
    limit = 32 << 20  # what each client tries to send (the server stops it after 64 KiB)
    with RssSampler(server.pid, interval_s=0.05) as rss:
        for _ in range(4):
            sent, answer = send_oversized_head(
                server, b"POST /imports?table=h HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * 65536, limit
            )
            assert sent < limit and (answer == b"" or answer.startswith(b"HTTP/1.1 400")), answer
        sent, answer = send_oversized_head(  # many small headers add up the same way
            server,
            b"GET /health HTTP/1.1\r\nHost: x\r\n",
            b"X-Many: 0123456789abcdef\r\n" * 4096,
            limit,
        )
        assert sent < limit and (answer == b"" or answer.startswith(b"HTTP/1.1 400")), answer
    assert rss.growth < 32, f"server RSS grew by {rss.growth:.0f} MiB"
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200


def stalled_upload(served: Served, import_id: str) -> socket.socket:
    """A raw-socket upload that sends its headers and part of its body, then nothing."""
    url = urlsplit(served.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    first = DATA[:50_000]
    sock.sendall(
        f"POST /imports?table=stalled HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: text/csv\r\nContent-Length: {len(DATA)}\r\nX-Import-Id: {import_id}\r\n"
        "\r\n".encode()
        + first
    )
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_stalled_uploads_time_out_and_free_their_slots(server: Served) -> None:
    stalled = [stalled_upload(server, f"stalled-{n}") for n in range(4)]  # every slot taken
    try:
        time.sleep(0.3)
        busy = post(server, "table=after_stall", DATA[:1000], "text/csv")
        assert busy.status_code == 503, busy.text
        started = time.monotonic()
        for sock in stalled:
            status, body = read_response(sock)
            assert status == 408, body
            assert body["status"] == "failed"
            assert body["error"] == f"no data received for {IDLE_S:g} s"
        assert time.monotonic() - started < IDLE_S + 3
    finally:
        for sock in stalled:
            sock.close()
    after = post(server, "table=after_stall&infer=false", DATA, "text/csv")
    assert after.status_code == 200, after.text
    assert after.json()["processed"] == len(ROWS)
    assert assert_only_whole_rows(db_path(server), "stalled") == 0


# --------------------------------------------------------------------------- multipart


def test_a_second_file_part_is_400(server: Served, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_bytes(products_csv(5))
    second.write_bytes(products_csv(5, start=5))
    out = tmp_path / "answer.json"
    result = curl(
        "-o", out, "-w", "%{http_code}", "-F", f"file=@{first}", "-F", f"file=@{second}",
        f"{server.url}/imports?table=two",
    )  # fmt: skip
    assert result.stdout == "400", result.stderr
    answer = json.loads(out.read_bytes())
    assert answer["status"] == "failed"
    assert answer["error"] == "the multipart body has more than one 'file' field"


def test_a_300_byte_boundary_is_400(server: Served) -> None:
    body = multipart(DATA[:1000]).replace(BOUNDARY.encode(), b"b" * 300)
    response = post(
        server, "table=long_boundary", body, f"multipart/form-data; boundary={'b' * 300}"
    )
    assert response.status_code == 400, response.text
    assert response.json().keys() == {"error"}
    assert "malformed multipart body" in one_line_error(response)
