"""Staging storage (``antioom.staging``): the same behaviour from a real directory and from a real
S3 HTTP endpoint.

The S3 endpoint is moto's server run as a subprocess (``tests/s3_server.py``): it stands in for a
real S3. No MinIO, Ceph or other S3-compatible server can be installed from the registries this
project's machines reach (PyPI's ``minio`` is the client SDK only), so moto is the closest thing:
boto3 talks to it over HTTP exactly as to AWS, with multipart uploads, ranged GETs and S3's
error codes, but it is a model of S3, not S3.
"""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from s3_server import S3_TEST_ENV, moto_server, s3_client
from server_helpers import free_port

from antioom.errors import ConfigError
from antioom.staging import (
    S3_MIN_PART_BYTES,
    RangeReader,
    StagedObjectMissing,
    Staging,
    open_staging,
)

BUCKET = "antioom-staging"
MiB = 1 << 20


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, with :data:`BUCKET` created, for this module."""
    with moto_server() as endpoint:
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def s3_admin(s3_endpoint: str) -> Any:
    """A client of the test endpoint to look behind the staging's back (made once: slow)."""
    return s3_client(s3_endpoint)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test credentials, and no endpoint or retry settings from the developer's environment."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)


@dataclass
class Store:
    """A staging store under test, with the part size to use and a view of what it holds."""

    staging: Staging
    part_bytes: int
    contents: Callable[[], list[str]]  # objects, temporary files and pending uploads


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        root = tmp_path / "staging"
        root.mkdir()

        def files() -> list[str]:
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

        return Store(open_staging(root.as_uri()), 1000, files)

    endpoint = request.getfixturevalue("s3_endpoint")
    client = request.getfixturevalue("s3_admin")
    request.getfixturevalue("s3_env")
    prefix = f"test-{uuid.uuid4().hex}"  # one bucket for the module, a fresh prefix per test

    def objects() -> list[str]:
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
        uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{prefix}/")
        return sorted(
            [item["Key"].removeprefix(f"{prefix}/") for item in listed.get("Contents", [])]
            + [f"pending upload of {item['Key']}" for item in uploads.get("Uploads", [])]
        )

    staging = open_staging(f"s3://{BUCKET}/{prefix}?endpoint_url={endpoint}")
    return Store(staging, S3_MIN_PART_BYTES, objects)


class Trickle:
    """A source whose reads return at most ``most`` bytes, like a network stream."""

    def __init__(self, data: bytes, most: int) -> None:
        self._data = io.BytesIO(data)
        self._most = most

    def read(self, size: int = -1, /) -> bytes:
        return self._data.read(self._most if size < 0 else min(size, self._most))


class Failing:
    """A source that gives ``good`` bytes, then raises, like a client that drops mid-upload."""

    def __init__(self, good: int) -> None:
        self._data = io.BytesIO(random.Random(good).randbytes(good))

    def read(self, size: int = -1, /) -> bytes:
        if data := self._data.read(size):
            return data
        raise ConnectionResetError("the client went away")


class Generated:
    """A generator-backed source that is never whole in memory: ``blocks`` times a numbered
    copy of one 1 MiB block (numbered so that no two parts are alike). It hashes what it gives.
    """

    def __init__(self, blocks: int) -> None:
        block = random.Random(7).randbytes(MiB)
        self.size = blocks * (8 + MiB)
        self.sha256 = hashlib.sha256()
        self._pieces = (piece for i in range(blocks) for piece in (i.to_bytes(8, "big"), block))
        self._view = memoryview(b"")

    def read(self, size: int = -1, /) -> bytes:
        while not self._view:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._view = memoryview(piece)
        data = bytes(self._view[: size if size >= 0 else len(self._view)])
        self._view = self._view[len(data) :]
        self.sha256.update(data)
        return data


def read_all(reader: RangeReader, size: int = 4096) -> bytes:
    """Everything ``reader`` gives in ``size``-byte reads, then closes it."""
    pieces = []
    with reader:
        while piece := reader.read(size):
            assert len(piece) <= size
            pieces.append(piece)
    return b"".join(pieces)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(lambda part: 0, id="empty"),
        pytest.param(lambda part: 1, id="one-byte"),
        pytest.param(lambda part: part - 1, id="under-one-part"),
        pytest.param(lambda part: part, id="one-part"),
        pytest.param(lambda part: 3 * part + 123, id="parts-and-remainder"),
    ],
)
def test_put_size_and_read_back(store: Store, size: Callable[[int], int]) -> None:
    data = random.Random(size(1000)).randbytes(size(store.part_bytes))
    # Short reads from the source must still make full parts (S3 refuses small ones).
    written = store.staging.put("upload.csv", Trickle(data, 70_001), part_bytes=store.part_bytes)
    assert written == len(data)
    assert store.staging.size("upload.csv") == len(data)
    assert read_all(store.staging.open_range("upload.csv")) == data
    assert store.contents() == ["upload.csv"]


def test_ranges_at_the_edges(store: Store) -> None:
    part = store.part_bytes
    data = random.Random(3).randbytes(2 * part + 10)
    n = len(data)
    store.staging.put("obj", io.BytesIO(data), part_bytes=part)
    for start, end in [
        (0, None),
        (0, n),
        (0, 0),
        (5, 5),
        (n - 1, None),
        (n - 1, n),
        (n, None),
        (n, n),
        (part - 10, part + 10),  # across a part boundary
        (1, n + 100),  # past the end stops at the end, like a slice
        (n + 5, None),
    ]:
        assert read_all(store.staging.open_range("obj", start, end)) == data[start:end], (
            start,
            end,
        )
    with store.staging.open_range("obj", n - 3) as reader:
        assert reader.read() == data[-3:]
        assert reader.read() == b""
    for start, end in [(-1, None), (5, 4)]:
        with pytest.raises(ValueError, match="invalid range"):
            store.staging.open_range("obj", start, end)


def test_nested_keys_and_delete(store: Store) -> None:
    store.staging.put("imports/42/data.csv", io.BytesIO(b"a,b\n1,2\n"))
    assert store.contents() == ["imports/42/data.csv"]
    store.staging.delete("imports/42/data.csv")
    store.staging.delete("imports/42/data.csv")  # already gone: no error
    store.staging.delete("never/written")
    assert store.contents() == []
    with pytest.raises(StagedObjectMissing, match=r"imports/42/data\.csv"):
        store.staging.size("imports/42/data.csv")
    for start, end in [(0, None), (0, 0)]:  # even an empty range needs the object
        with pytest.raises(StagedObjectMissing):
            store.staging.open_range("imports/42/data.csv", start, end)


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/etc/passwd", "", "a//b", "./a"])
def test_unsafe_keys_are_refused(store: Store, key: str) -> None:
    for call in (
        lambda: store.staging.put(key, io.BytesIO(b"x")),
        lambda: store.staging.size(key),
        lambda: store.staging.open_range(key),
        lambda: store.staging.delete(key),
    ):
        with pytest.raises(ValueError, match="invalid staging key"):
            call()
    assert store.contents() == []


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("parts", [0.5, 2.5], ids=["within-first-part", "after-two-parts"])
def test_a_failing_source_leaves_nothing(store: Store, parts: float) -> None:
    source = Failing(int(parts * store.part_bytes))
    with pytest.raises(ConnectionResetError):
        store.staging.put("broken", source, part_bytes=store.part_bytes)
    assert store.contents() == []  # no object, no temporary file, no pending multipart upload
    with pytest.raises(StagedObjectMissing):
        store.staging.size("broken")


def test_a_failed_overwrite_keeps_the_old_object(store: Store) -> None:
    store.staging.put("obj", io.BytesIO(b"the complete old version"))
    with pytest.raises(ConnectionResetError):
        store.staging.put("obj", Failing(2 * store.part_bytes + 1), part_bytes=store.part_bytes)
    assert read_all(store.staging.open_range("obj")) == b"the complete old version"
    assert store.contents() == ["obj"]


def test_an_object_is_invisible_until_complete(store: Store) -> None:
    seen: list[str] = []

    class Watching(Trickle):
        def read(self, size: int = -1, /) -> bytes:
            try:
                seen.append(f"size {store.staging.size('obj')}")
            except StagedObjectMissing:
                seen.append("missing")
            return super().read(size)

    data = bytes(2 * store.part_bytes + 1)
    store.staging.put("obj", Watching(data, store.part_bytes), part_bytes=store.part_bytes)
    assert set(seen) == {"missing"}
    assert store.staging.size("obj") == 2 * store.part_bytes + 1


def test_part_size_below_the_minimum_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="part_bytes"):
        store.staging.put("obj", io.BytesIO(b"x"), part_bytes=0)
    assert store.contents() == []


# --------------------------------------------------------------------------- memory


def test_memory_stays_within_a_few_parts(store: Store) -> None:
    """64 MiB in and out, never whole in memory: the staging holds about one part at a time.

    tracemalloc sees every Python allocation (boto3's included) made after it starts; the test's
    source block was made before, so only the parts and reads count.
    """
    part = MiB if store.part_bytes < MiB else store.part_bytes
    source = Generated(64)
    tracemalloc.start()
    try:
        written = store.staging.put("big", source, part_bytes=part)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read_back = hashlib.sha256()
        with store.staging.open_range("big") as reader:
            while piece := reader.read(64 << 10):
                read_back.update(piece)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == source.size == store.staging.size("big")
    assert read_back.hexdigest() == source.sha256.hexdigest()
    assert put_peak < 3 * part, f"put peaked at {put_peak / MiB:.1f} MiB (part {part / MiB} MiB)"
    assert read_peak < 1 * MiB, f"64 KiB reads peaked at {read_peak / MiB:.1f} MiB"


# --------------------------------------------------------------------------- URLs and config


def one_line_config_error(url: str) -> str:
    """The message of the ConfigError that opening ``url`` raises, checked to be one line and
    free of a chained traceback."""
    with pytest.raises(ConfigError) as caught:
        open_staging(url)
    message = str(caught.value)
    assert message and "\n" not in message
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return message


@pytest.mark.parametrize(
    "url", ["ftp://host/dir", "/plain/path", "gs://bucket/prefix", "postgresql://x/y"]
)
def test_unknown_scheme_names_the_accepted_forms(url: str) -> None:
    message = one_line_config_error(url)
    assert "file:///" in message and "s3://bucket/prefix" in message


def test_bad_file_urls(tmp_path: Path) -> None:
    assert "does not exist" in one_line_config_error((tmp_path / "not-mounted").as_uri())
    assert "invalid staging URL" in one_line_config_error("file:relative/dir")
    assert "invalid staging URL" in one_line_config_error("file://otherhost/dir")


@pytest.mark.usefixtures("s3_env")
def test_unreachable_s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # fail at once rather than after retries
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    message = one_line_config_error(f"s3://{BUCKET}/p?endpoint_url={endpoint}")
    assert "Could not connect" in message and endpoint in message


@pytest.mark.usefixtures("s3_env")
def test_missing_bucket_and_bad_s3_urls(s3_endpoint: str) -> None:
    message = one_line_config_error(f"s3://no-such-bucket/p?endpoint_url={s3_endpoint}")
    assert "'no-such-bucket' does not exist" in message
    assert "invalid" in one_line_config_error(f"s3://{BUCKET}/p?region=eu&endpoint_url=x")
    assert "invalid" in one_line_config_error("s3:///prefix-without-bucket")
    assert "invalid S3 endpoint" in one_line_config_error(f"s3://{BUCKET}?endpoint_url=nonsense")


@pytest.mark.usefixtures("s3_env")
def test_s3_endpoint_from_the_environment(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    staging = open_staging(f"s3://{BUCKET}/from-env")
    assert staging.url == f"s3://{BUCKET}/from-env"
    staging.put("k", io.BytesIO(b"hello"))
    with pytest.raises(ValueError, match="part_bytes"):  # S3 refuses parts under 5 MiB
        staging.put("k", io.BytesIO(b"hello"), part_bytes=S3_MIN_PART_BYTES - 1)
    assert read_all(staging.open_range("k", 1, 4)) == b"ell"
    staging.delete("k")


def test_file_staging_does_not_import_boto3(tmp_path: Path) -> None:
    """boto3 costs the CLI's start-up a noticeable fraction of a second: only s3:// loads it."""
    code = (
        "import sys\nfrom antioom.staging import open_staging\n"
        f"open_staging({tmp_path.as_uri()!r})\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
