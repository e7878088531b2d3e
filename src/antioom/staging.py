"""Staging storage for queued imports: an upload is streamed in once, workers read byte ranges.

Two stores behind one small interface: a directory that every worker mounts (``file://``) and
S3 or any S3-compatible service (``s3://``). Both write and read in bounded memory (one part
at a time), and a failed write leaves nothing behind, so a worker never sees half an upload.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from antioom.errors import AntioomError, ConfigError, InputError, StagingUnavailable

if TYPE_CHECKING:  # at run time this would import pyarrow, which the CLI start-up avoids
    from antioom.engine.source import Readable

# S3's answers that mean "try again later": throttling, timeouts, internal errors (and 5xx)
TRANSIENT_CODES = ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503")
S3_MIN_PART_BYTES = 5 << 20  # S3's minimum size for every multipart part but the last
ACCEPTED_FORMS = "file:///absolute/dir or s3://bucket/prefix[?endpoint_url=http://host:port]"


class StagedObjectMissing(InputError):
    """The staged object does not exist (never written, failed, or already deleted)."""


class _Stream(Protocol):
    def read(self, size: int | None = ..., /) -> bytes: ...

    def close(self) -> None: ...


class RangeReader:
    """A reader of one byte range of a staged object, pulled piece by piece from an open stream.

    It stops at the end of the range itself, so it never depends on the store honouring it.
    """

    def __init__(self, stream: _Stream, length: int | None) -> None:
        self._stream = stream
        self._remaining = length
        self.closed = False

    def read(self, size: int = -1, /) -> bytes:
        if self._remaining is not None:
            if self._remaining <= 0:
                return b""
            size = self._remaining if size < 0 else min(size, self._remaining)
        data = self._stream.read(None if size < 0 else size)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        self.closed = True

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _EmptyStream:
    """The stream of an empty range: nothing to fetch."""

    def read(self, size: int | None = -1, /) -> bytes:
        return b""

    def close(self) -> None:
        pass


class Staging(ABC):
    """Where queued uploads wait for a worker. ``url`` is the URL it was opened from."""

    url: str

    @abstractmethod
    def put(self, key: str, source: Readable, *, part_bytes: int = 8 << 20) -> int:
        """Stream ``source`` (``read(n)``, ``b""`` at the end) into ``key``; return its size.

        At most one part (``part_bytes``) is held in memory. On any error nothing is left
        behind and the error is re-raised.
        """

    @abstractmethod
    def size(self, key: str) -> int:
        """The size of ``key`` in bytes; :class:`StagedObjectMissing` if there is none."""

    @abstractmethod
    def open_range(self, key: str, start: int = 0, end: int | None = None) -> RangeReader:
        """A streaming reader of bytes ``[start, end)`` of ``key`` (``end=None``: to its end).

        Like a slice, an ``end`` past the object's size stops at its end.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""


def open_staging(url: str) -> Staging:
    """The staging store at ``url``: ``file:///absolute/dir`` or ``s3://bucket/prefix``.

    The store is checked now (the directory exists, the bucket answers), so that a wrong URL
    fails at start-up with a one-line message instead of on the first upload.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileStaging(url)
    if parts.scheme == "s3":
        return S3Staging(url)
    raise ConfigError(f"unsupported staging URL {url!r}: use {ACCEPTED_FORMS}")


def _key_parts(key: str) -> list[str]:
    """The path segments of ``key``; refuses keys that could name something outside the store."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid staging key {key!r}: use relative names without '.' or '..'")
    return parts


def _check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid range [{start}, {end}): need 0 <= start <= end")


def _check_part_bytes(part_bytes: int, minimum: int) -> None:
    if part_bytes < minimum:
        raise ValueError(f"part_bytes must be at least {minimum}, not {part_bytes}")


# --------------------------------------------------------------------------- a shared directory


class FileStaging(Staging):
    """Objects are files under a directory; each is written to a temporary file beside it and
    renamed into place, so a reader sees the whole object or none."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/") or parts.query:
            raise ConfigError(f"invalid staging URL {url!r}: use {ACCEPTED_FORMS}")
        # A missing directory is refused, not created: it is usually a share that is not
        # mounted, and writing to the local disk underneath would hide uploads from workers.
        if not os.path.isdir(path):
            raise ConfigError(f"the staging directory {path} does not exist or is not a directory")
        self.url = url
        self.root = Path(path)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_key_parts(key))

    def put(self, key: str, source: Readable, *, part_bytes: int = 8 << 20) -> int:
        _check_part_bytes(part_bytes, 1)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        # os.open rather than tempfile: its 0o666 goes through the umask, so workers running
        # as other users can read the object (mkstemp would make it 0600).
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with open(fd, "wb") as out:
                total = 0
                while chunk := source.read(part_bytes):
                    out.write(chunk)
                    total += len(chunk)
                os.fsync(out.fileno())  # the rename must not outlive its data after a crash
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return total

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise StagedObjectMissing(f"no staged object {key!r} in {self.root}")
        return info.st_size

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> RangeReader:
        _check_range(start, end)
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by RangeReader.close
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StagedObjectMissing(f"no staged object {key!r} in {self.root}") from None
        handle.seek(start)
        return RangeReader(handle, None if end is None else end - start)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


# --------------------------------------------------------------------------- S3


class S3Staging(Staging):
    """Objects live under ``prefix/`` in an S3 bucket: multipart uploads of bounded parts,
    ranged GETs streamed back.

    Endpoint, credentials and region come from the standard AWS environment
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), so MinIO, Ceph or moto work as well as
    AWS; ``?endpoint_url=`` in the URL overrides the endpoint.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        if not parts.netloc or set(query) - {"endpoint_url"} or parts.fragment:
            raise ConfigError(f"invalid staging URL {url!r}: use {ACCEPTED_FORMS}")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        endpoint_url = query["endpoint_url"][-1] if "endpoint_url" in query else None
        self._client = _s3_client(endpoint_url)
        self._call("head_bucket", Bucket=self.bucket)

    def _name(self, key: str) -> str:
        name = "/".join(_key_parts(key))
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, operation: str, key: str | None = None, **params: Any) -> Any:
        """``client.operation(**params)``, with S3's errors as one-line antioom errors."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self._client, operation)(**params)
        except ClientError as exc:
            raise self._client_error(exc, key) from None
        except NoCredentialsError:
            raise ConfigError(
                f"S3 staging s3://{self.bucket}: no credentials "
                "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from None
        except BotoCoreError as exc:  # no answer: the endpoint, a connection, a timeout
            error_class = ConfigError if key is None else StagingUnavailable
            raise error_class(f"S3 staging s3://{self.bucket}: {_first_line(exc)}") from None

    def _endpoint(self) -> str:
        return str(self._client.meta.endpoint_url)

    def _client_error(self, exc: Any, key: str | None) -> AntioomError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        where = f"s3://{self.bucket} at {self._endpoint()}"
        if code == "NoSuchBucket" or (key is None and code == "404"):
            return ConfigError(
                f"the S3 bucket {self.bucket!r} does not exist at {self._endpoint()}"
            )
        if key is not None and code in ("NoSuchKey", "404"):
            return StagedObjectMissing(f"no staged object {key!r} in s3://{self.bucket}")
        message = _first_line(f"{code}: {error.get('Message') or 'no message'}")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return ConfigError(f"S3 staging {where} refused access: {message}")
        # Without a key this is the bucket check of open_staging: whatever fails, it is the URL.
        if key is None:
            error_class: type[AntioomError] = ConfigError
        elif code in TRANSIENT_CODES or code.startswith("5"):
            error_class = StagingUnavailable
        else:
            error_class = AntioomError
        return error_class(f"S3 staging {where} failed: {message}")

    def put(self, key: str, source: Readable, *, part_bytes: int = 8 << 20) -> int:
        _check_part_bytes(part_bytes, S3_MIN_PART_BYTES)
        name = self._name(key)
        part = _read_part(source, part_bytes)
        if len(part) < part_bytes:  # the whole object fits in one request
            self._call("put_object", key, Bucket=self.bucket, Key=name, Body=part)
            return len(part)
        upload = self._call("create_multipart_upload", key, Bucket=self.bucket, Key=name)
        ids = {"Bucket": self.bucket, "Key": name, "UploadId": upload["UploadId"]}
        try:
            done: list[dict[str, Any]] = []
            total = 0
            while part:
                number = len(done) + 1
                sent = self._call("upload_part", key, PartNumber=number, Body=part, **ids)
                done.append({"PartNumber": number, "ETag": sent["ETag"]})
                total += len(part)
                part = bytearray()  # drop the part sent before reading the next one
                part = _read_part(source, part_bytes)
            self._call("complete_multipart_upload", key, MultipartUpload={"Parts": done}, **ids)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to report
                self._client.abort_multipart_upload(**ids)
            raise
        return total

    def size(self, key: str) -> int:
        head = self._call("head_object", key, Bucket=self.bucket, Key=self._name(key))
        return int(head["ContentLength"])

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> RangeReader:
        _check_range(start, end)
        # The size first: it checks that the object exists even for an empty range, and
        # clips the range to the object, which S3 would refuse (416) past its end.
        size = self.size(key)
        end = size if end is None else min(end, size)
        if start >= end:
            return RangeReader(_EmptyStream(), 0)
        where = f"{key!r} in s3://{self.bucket} at {self._endpoint()}"
        response = self._call(
            "get_object",
            key,
            Bucket=self.bucket,
            Key=self._name(key),
            Range=f"bytes={start}-{end - 1}",
        )
        return _S3RangeReader(response["Body"], end - start, where)

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Bucket=self.bucket, Key=self._name(key))


class _S3RangeReader(RangeReader):
    """A :class:`RangeReader` whose broken-off connection is a one-line error, not botocore's."""

    def __init__(self, stream: _Stream, length: int, where: str) -> None:
        super().__init__(stream, length)
        self._where = where

    def read(self, size: int = -1, /) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            return super().read(size)
        except BotoCoreError as exc:
            raise StagingUnavailable(f"reading {self._where} failed: {_first_line(exc)}") from None


def _first_line(error: object) -> str:
    return str(error).strip().split("\n", 1)[0]


def _read_part(source: Readable, part_bytes: int) -> bytearray:
    """Up to ``part_bytes`` from ``source``: short only at its end (a read may return less)."""
    part = bytearray()
    while len(part) < part_bytes:
        chunk = source.read(part_bytes - len(part))
        if not chunk:
            break
        part += chunk
    return part


def _s3_client(endpoint_url: str | None) -> Any:
    """An S3 client configured from the standard AWS environment (boto3 is imported here, not
    at start-up: it takes a noticeable fraction of a second)."""
    import boto3
    from botocore.config import Config

    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        connect_timeout=10,  # botocore's 60 s, times its retries, would look like a hang
        # S3-compatible servers usually serve a bucket under the path, not as a host name.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    except ValueError as exc:  # botocore's word for a malformed endpoint URL
        raise ConfigError(f"invalid S3 endpoint URL {endpoint_url!r}: {exc}") from None
