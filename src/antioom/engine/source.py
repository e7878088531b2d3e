"""Byte sources: files, stdin and an async producer, with transparent gzip/zstd.

Every source ends up as a :class:`CountingReader`, a plain blocking ``read(n)`` object that the
CSV parser pulls from. Nothing here ever holds more than one read's worth of bytes, except
:class:`ByteChannel`, whose buffer has a hard bound.
"""

from __future__ import annotations

import collections
import sys
import threading
from pathlib import Path
from typing import BinaryIO, Protocol

import pyarrow as pa

from antioom.errors import ImportCancelled, InputError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class PeekableReader:
    """A blocking reader whose first bytes can be looked at without being lost.

    The engine peeks for compression magic, the header and dialect sniffing, then hands the
    same reader to the parser, which sees every byte from the start.
    """

    def __init__(self, raw: Readable, *, close_raw: bool = False) -> None:
        self._raw = raw
        self._close_raw = close_raw
        self._pushback = b""
        self.closed = False

    def _read_raw(self, size: int) -> bytes:
        return self._raw.read(size)

    def peek(self, size: int) -> bytes:
        while len(self._pushback) < size:
            chunk = self._read_raw(size - len(self._pushback))
            if not chunk:
                break
            self._pushback += chunk
        return self._pushback[:size]

    def read(self, size: int = -1, /) -> bytes:
        if size == 0:
            return b""
        if not self._pushback:
            return self._read_raw(size)
        if 0 <= size < len(self._pushback):
            data, self._pushback = self._pushback[:size], self._pushback[size:]
            return data
        # Hand back a full read, not just the peeked bytes: the parser infers from its first
        # block, and a 4-byte first block would make a poor sample.
        data, self._pushback = self._pushback, b""
        if len(data) == size:
            return data
        return data + self._read_raw(-1 if size < 0 else size - len(data))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed and self._close_raw and hasattr(self._raw, "close"):
            self._raw.close()
        self.closed = True


class CountingReader(PeekableReader):
    """A :class:`PeekableReader` that counts the bytes taken from the source (for progress).

    ``max_decompressed_bytes`` travels with the source so that :func:`decompressed` can stop
    a compression bomb whatever drives the import (the server sets it, the CLI need not).
    """

    def __init__(
        self, raw: Readable, *, close_raw: bool = False, max_decompressed_bytes: int | None = None
    ) -> None:
        super().__init__(raw, close_raw=close_raw)
        self.bytes_read = 0
        self.max_decompressed_bytes = max_decompressed_bytes

    def _read_raw(self, size: int) -> bytes:
        data = self._raw.read(size)
        self.bytes_read += len(data)
        return data


def open_path(path: str | Path) -> CountingReader:
    """Open a file path, or ``-`` for standard input, for streaming."""
    if str(path) == "-":
        return CountingReader(sys.stdin.buffer)
    try:
        handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by CountingReader.close
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror}") from None
    return CountingReader(handle, close_raw=True)


class DecompressedTooLarge(InputError):
    """The input decompresses to more than its limit (a compression bomb; HTTP 413)."""


class Decompressing:
    """A gzip/zstd decoder that fails loudly: a truncated or corrupt stream raises InputError
    (never a clean end of input, after which the parser would take a cut-off last record as
    complete), and more than ``limit`` decompressed bytes raise :class:`DecompressedTooLarge`.
    """

    def __init__(self, reader: CountingReader, codec: str, limit: int | None) -> None:
        self._stream = pa.CompressedInputStream(pa.PythonFile(reader, mode="r"), codec)
        self._codec = codec
        self._limit = limit
        self.bytes_out = 0

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._stream.read(None if size < 0 else size)
        except (OSError, pa.ArrowException) as exc:  # the source's own errors pass unchanged
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"the {self._codec} input is truncated or corrupt: {reason}") from None
        self.bytes_out += len(data)
        if self._limit is not None and self.bytes_out > self._limit:
            raise DecompressedTooLarge(
                f"the input decompresses to more than {self._limit} bytes "
                "(the decompressed-size limit)"
            )
        return data


def decompressed(reader: CountingReader) -> Readable:
    """The stream to parse: ``reader`` itself, or a gzip/zstd decoder over it (by magic bytes),
    held to ``reader.max_decompressed_bytes``."""
    head = reader.peek(4)
    if head.startswith(GZIP_MAGIC):
        codec = "gzip"
    elif head.startswith(ZSTD_MAGIC):
        codec = "zstd"
    else:
        return reader
    return Decompressing(reader, codec, reader.max_decompressed_bytes)


class ByteChannel:
    """A bounded, thread-safe byte buffer between an async producer and the engine thread.

    The producer awaits :meth:`send`, which waits while ``max_bytes`` are buffered: a slow
    database slows the reader of the network, never grows memory. The engine thread reads
    with the blocking :meth:`read`. Either side can end the flow: the producer with
    :meth:`close` (end of input, or an error such as a client abort), the consumer with
    :meth:`abandon` (the import failed, so further bytes are refused).
    """

    def __init__(self, max_bytes: int = 4 << 20) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self.high_water = 0
        self._eof = False
        self._error: BaseException | None = None
        self._abandoned = False
        self._cond = threading.Condition()

    @property
    def buffered(self) -> int:
        return self._buffered

    def send_blocking(self, data: bytes) -> None:
        """Append ``data``, waiting for room. Raises ImportCancelled once abandoned."""
        view = memoryview(data)
        piece = max(1, self.max_bytes // 4)
        for start in range(0, len(view), piece):
            self._put(bytes(view[start : start + piece]))

    async def send(self, data: bytes) -> None:
        """Async variant of :meth:`send_blocking`; waits in a worker thread only when full."""
        if self._buffered + len(data) <= self.max_bytes and len(data) <= self.max_bytes // 4:
            self._put(data)
            return
        import asyncio  # here: blocking callers never load asyncio

        await asyncio.to_thread(self.send_blocking, data)

    def _put(self, chunk: bytes) -> None:
        with self._cond:
            while self._buffered + len(chunk) > self.max_bytes and not self._abandoned:
                self._cond.wait()
            if self._abandoned:
                raise ImportCancelled("the import has stopped; no more data is accepted")
            if self._eof:
                raise RuntimeError("send after close")
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            self.high_water = max(self.high_water, self._buffered)
            self._cond.notify_all()

    def close(self, error: BaseException | None = None) -> None:
        """End of input; with ``error``, the reader raises it instead of seeing EOF."""
        with self._cond:
            self._eof = True
            self._error = error
            self._cond.notify_all()

    def abandon(self) -> None:
        """Called by the consumer when it stops early: wakes and refuses the producer."""
        with self._cond:
            self._abandoned = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()

    def read(self, size: int = -1, /) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof and not self._abandoned:
                self._cond.wait()
            if self._abandoned:
                raise ImportCancelled("the import was cancelled")
            if self._error is not None and not self._chunks:
                raise self._error
            if not self._chunks:
                return b""
            parts: list[bytes] = []
            taken = 0
            while self._chunks and (size < 0 or taken < size):
                chunk = self._chunks.popleft()
                if size >= 0 and taken + len(chunk) > size:
                    cut = size - taken
                    self._chunks.appendleft(chunk[cut:])
                    chunk = chunk[:cut]
                parts.append(chunk)
                taken += len(chunk)
            self._buffered -= taken
            self._cond.notify_all()
            return b"".join(parts)
