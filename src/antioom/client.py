"""Upload a CSV file to an anti-oom server, streaming: the file is never read whole.

The body is a generator of 1 MiB chunks sent as a raw ``text/csv`` request (or, with
``compress=True``, gzip-compressed on the fly and sent as ``application/gzip``), so the client
runs in flat memory too, and the server's backpressure slows it down through TCP.

Errors are :class:`~antioom.errors.AntioomError` subclasses carrying the CLI exit code:
:class:`UploadRejected` (2) for an HTTP 4xx, :class:`ServerUnavailable` (4) when the server
cannot be reached or answers 503, :class:`UploadFailed` (1) otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

import httpx

from antioom.errors import AntioomError, ConfigError, InputError

CHUNK_BYTES = 1 << 20
DEFAULT_DATASET = "products"  # the server's default, as POST /upload: the seed's dataset
ProgressCallback = Callable[[int], None]
QueryParams = Mapping[str, str | Sequence[str]]


class UploadError(AntioomError):
    """An upload that did not complete; ``record`` is the server's import record, if any."""

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the server said
        self.record = record


class UploadRejected(UploadError):
    """The server refused the upload (HTTP 4xx): bad token, bad options, bad input."""

    exit_code = 2


class ServerUnavailable(UploadError):
    """The server could not be reached, or is unavailable (HTTP 503)."""

    exit_code = 4


class UploadFailed(UploadError):
    """Anything else: a server error, a lost connection, an aborted import."""

    exit_code = 1


def upload_file(
    path: str,
    url: str,
    *,
    token: str | None = None,
    dataset: str | None = None,
    table: str | None = None,
    mode: str | None = None,
    compress: bool = False,
    import_id: str | None = None,
    params: QueryParams | None = None,
    on_progress: ProgressCallback | None = None,
    timeout: float = 10.0,
    retries: int = 0,
    on_retry: Callable[[int, float, str], None] | None = None,
) -> dict[str, Any]:
    """Stream ``path`` (or stdin for ``-``) to ``url`` and return the server's import record.

    ``url`` is the server's base URL (``http://host:8000``) or its ``/imports`` endpoint.
    With neither ``dataset`` nor ``table``, the file goes into the ``products`` dataset, as
    ``POST /upload`` does.
    ``params`` are more query parameters, e.g. the CSV options from :func:`csv_params`
    (``{"delimiter": ";", "type": ["zip=string"]}``); the record's ``dialect`` tells how the
    server read the file.
    ``on_progress`` receives the number of file bytes read (and handed to the connection) so far.
    ``timeout`` bounds connecting; the upload itself and the wait for the import's end do not
    time out (the server answers once the last batch is committed).

    ``retries``: how many times a file upload is sent again, from its start and under the same
    import id, when the connection breaks, the server is unavailable (503, or unreachable after
    it was reached once) or still finishing the broken attempt (409 "running"); the server
    skips the batches it committed. A retry
    answered 409 "completed" means an earlier attempt completed: its record is returned.
    ``on_retry(attempt, delay_s, reason)`` is told before each wait. Stdin cannot be sent again.
    """
    if dataset is not None and table is not None:
        raise ConfigError("give --dataset or --table, not both")
    if dataset is None and table is None:
        dataset = DEFAULT_DATASET  # what POST /upload imports into
    if mode not in (None, "insert", "upsert"):
        raise ConfigError(f"invalid mode {mode!r}: use insert or upsert")
    if retries < 0:
        raise ConfigError("the number of retries cannot be negative")
    endpoint = imports_url(url)
    query: dict[str, str | Sequence[str]] = dict(params or {})
    query.update(
        (name, value)
        for name, value in (("dataset", dataset), ("table", table), ("mode", mode))
        if value is not None
    )
    headers = {
        "Content-Type": "application/gzip" if compress else "text/csv",
        "X-Import-Id": import_id or uuid.uuid4().hex,
        "User-Agent": "antioom-upload",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if path != "-":
        query.setdefault("filename", os.path.basename(path))  # kept in the import record
    preflight(path, endpoint, query, headers, timeout)
    retries = 0 if path == "-" else retries
    attempt = 0
    while True:
        try:
            response = _send(path, endpoint, query, headers, compress, on_progress, timeout)
            if attempt and _already_completed(response):
                return _record(endpoint, headers, timeout)
            return _result(response)
        except (ServerUnavailable, _Busy, _Broken) as exc:
            # A server never reached is more likely a wrong URL than a restart: no retry.
            never_reached = isinstance(exc, _Unreachable) and attempt == 0
            if attempt >= retries or never_reached:
                raise exc.final() if isinstance(exc, _Busy | _Broken) else exc from None
            attempt += 1
            delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempt - 1))
            if on_retry is not None:
                on_retry(attempt, delay, str(exc))
            time.sleep(delay)


def preflight(
    path: str, endpoint: str, query: QueryParams, headers: Mapping[str, str], timeout: float
) -> None:
    """Ask the server whether it would take this upload (``GET /imports/check``: target, mode,
    CSV options, key) before sending any of the file: a refusal raises UploadRejected at once.
    A file that cannot be read is an InputError first; a server without the endpoint (404,
    405) or unavailable (503, retried by the upload) is left to answer the upload itself."""
    if path != "-":
        _open_source(path).close()
    wanted = {k: v for k, v in headers.items() if k in ("Authorization", "User-Agent")}
    try:
        response = httpx.get(f"{endpoint}/check", params=query, headers=wanted, timeout=timeout)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"invalid URL {endpoint!r}: {exc}") from None
    except httpx.HTTPError as exc:
        raise _Unreachable(f"cannot connect to {endpoint}: {_reason(exc)}") from None
    if response.status_code >= 400 and response.status_code not in (404, 405, 503):
        _result(response)  # raises UploadRejected (4xx) or UploadFailed


RETRY_BASE_S = 1.0
RETRY_CAP_S = 30.0


class _Unreachable(ServerUnavailable):
    """Connecting failed (refused, timed out)."""


class _Busy(UploadError):
    """409: the import is still running (the server has not yet seen a broken attempt end)."""

    def final(self) -> UploadError:
        return UploadRejected(str(self), self.record)


class _Broken(UploadError):
    """The connection broke mid-upload."""

    def final(self) -> UploadError:
        return UploadFailed(str(self), self.record)


def _send(
    path: str,
    endpoint: str,
    query: QueryParams,
    headers: dict[str, str],
    compress: bool,
    on_progress: ProgressCallback | None,
    timeout: float,
) -> httpx.Response:
    """One attempt: the whole file in one POST."""
    source = _open_source(path)
    try:
        size = _regular_file_size(source)
        if size is not None and not compress:
            headers["Content-Length"] = str(size)  # lets the server refuse a too-large file early
        body = _chunks(source, on_progress)
        if compress:
            body = _gzip(body)
        limits = httpx.Timeout(timeout, read=None, write=None)
        try:
            with httpx.Client(timeout=limits) as client:
                response = client.post(endpoint, params=query, content=body, headers=headers)
        except httpx.ConnectError as exc:
            raise _Unreachable(f"cannot connect to {endpoint}: {_reason(exc)}") from None
        except httpx.TimeoutException as exc:
            raise _Unreachable(f"timed out connecting to {endpoint}: {_reason(exc)}") from None
        except httpx.InvalidURL as exc:
            raise ConfigError(f"invalid URL {endpoint!r}: {exc}") from None
        except httpx.TransportError as exc:
            raise _Broken(f"connection to {endpoint} lost: {_reason(exc)}") from None
        except OSError as exc:  # reading the file failed mid-way
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if response.status_code == 409 and "running" in response.text:
        raise _Busy(f"HTTP 409: {_error_text(response)}")
    if response.status_code == 503:
        raise ServerUnavailable(f"HTTP 503: {_error_text(response)}")
    return response


def _already_completed(response: httpx.Response) -> bool:
    return response.status_code == 409 and "completed" in response.text


def _record(endpoint: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    """The record of the import an earlier attempt completed."""
    wanted = {k: v for k, v in headers.items() if k in ("Authorization", "User-Agent")}
    try:
        response = httpx.get(
            f"{endpoint}/{headers['X-Import-Id']}", headers=wanted, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise ServerUnavailable(f"cannot read the import's record: {_reason(exc)}") from None
    return _result(response)


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return response.reason_phrase


def csv_params(
    *,
    delimiter: str | None = None,
    quote: str | None = None,
    escape: str | None = None,
    encoding: str | None = None,
    header: bool | None = None,
    columns: Sequence[str] | None = None,
    skip: int | None = None,
    comment: str | None = None,
    null: Sequence[str] | None = None,
    types: Mapping[str, str] | None = None,
    infer: bool = True,
) -> dict[str, str | list[str]]:
    """The query parameters of ``POST /imports`` for these CSV options (``None``: the server
    detects it), checked here first: a bad value is a ConfigError before anything is sent.
    An empty ``quote``/``escape`` means none; ``types`` (table imports) forces column types,
    ``{"zip": "string"}``; ``infer=False`` makes every column text."""
    from antioom.engine.records import Dialect

    Dialect(  # the server's checks, before connecting
        delimiter=delimiter,
        quote_char=quote,
        escape_char=escape,
        header=header,
        columns=tuple(columns) if columns is not None else None,
        encoding=encoding,
        skip_lines=skip,
        comment=comment,
        null_values=tuple(null or ()),
    )
    params: dict[str, str | list[str]] = {}
    for name, value in (
        ("delimiter", delimiter),
        ("quote", quote),
        ("escape", escape),
        ("encoding", encoding),
        ("comment", comment),
    ):
        if value is not None:
            params[name] = value
    if header is not None:
        params["header"] = "true" if header else "false"
    if columns is not None:
        params["columns"] = ",".join(columns)
    if skip is not None:
        params["skip"] = str(skip)
    if null:
        params["null"] = ",".join(null)
    if types:
        params["type"] = [f"{name}={column_type}" for name, column_type in types.items()]
    if not infer:
        params["infer"] = "false"
    return params


def imports_url(url: str) -> str:
    """The ``/imports`` endpoint for a server's base URL (or the endpoint itself)."""
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"invalid URL {url!r}: use http://host:port or https://host")
    base = url.rstrip("/")
    return base if base.endswith("/imports") else f"{base}/imports"


def _open_source(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # closed by upload_file
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _regular_file_size(source: IO[bytes]) -> int | None:
    try:
        stat = os.fstat(source.fileno())
    except (OSError, ValueError):
        return None
    import stat as stat_module

    return stat.st_size if stat_module.S_ISREG(stat.st_mode) else None


def _chunks(source: IO[bytes], on_progress: ProgressCallback | None) -> Iterator[bytes]:
    sent = 0
    while True:
        chunk = source.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk
        sent += len(chunk)  # the connection asked for the next chunk: this one is sent
        if on_progress is not None:
            on_progress(sent)


def _gzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits=31: gzip container
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _result(response: httpx.Response) -> dict[str, Any]:
    """The import record on success; the matching error (with the server's message) otherwise."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        first = response.text.strip().splitlines()[:1]
        data = {"error": first[0][:200] if first else response.reason_phrase}
    status = response.status_code
    if status < 300:
        if data.get("status") in ("failed", "aborted", "interrupted"):
            reason = data.get("error") or data["status"]
            raise UploadFailed(f"import {data.get('id', '?')} {data['status']}: {reason}", data)
        return data
    message = f"HTTP {status}: {data.get('error') or response.reason_phrase}"
    record = data if "id" in data else None
    if status == 503:
        raise ServerUnavailable(message, record)
    if 400 <= status < 500:
        raise UploadRejected(message, record)
    raise UploadFailed(message, record)
