"""Async entry points, for code running in an event loop (FastAPI, Starlette, aiohttp).

The engine is blocking code in threads (Arrow's parser and the database drivers release the
GIL), so these run :func:`~antioom.api.import_csv` in a worker thread and never block the
loop. Cancelling the awaiting task stops the import at the next batch boundary: committed
batches stay committed, and the import can be resumed with the same ``import_id``.

    summary = await import_csv_async("products.csv", "postgresql://localhost/shop",
                                      dataset="products")

    async with PushImport("postgresql://localhost/shop", dataset="products") as upload:
        async for chunk in request.stream():      # bytes as they arrive
            await upload.push(chunk)               # waits while the buffer is full
    summary = upload.summary
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any

from antioom.api import import_csv
from antioom.engine.progress import Summary
from antioom.engine.source import ByteChannel, Readable
from antioom.errors import AntioomError, ConfigError, ImportCancelled

DEFAULT_BUFFER_BYTES = 4 << 20


async def import_csv_async(
    source: str | Path | Readable, db: str | None = None, **options: Any
) -> Summary:
    """:func:`~antioom.api.import_csv` without blocking the event loop (same arguments)."""
    cancel: threading.Event = options.pop("cancel", None) or threading.Event()
    task = asyncio.ensure_future(
        asyncio.to_thread(import_csv, source, db, cancel=cancel, **options)
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        cancel.set()  # the thread stops at the next batch boundary, with ImportCancelled
        task.add_done_callback(_retrieve)
        raise


def _retrieve(task: asyncio.Future[Summary]) -> None:
    """Take the outcome of an import whose awaiting task was cancelled (nobody wants it)."""
    if not task.cancelled():
        task.exception()


class PushImport:
    """An import fed by ``await push(bytes)`` — a request body, a socket, a queue.

    At most ``buffer_bytes`` wait between ``push`` and the engine: while the database is
    slower than the producer, ``push`` waits, so memory stays flat. Leaving the ``async with``
    block ends the input and waits for the import; ``summary`` then holds the result. If the
    block raises, the import is cancelled (committed batches stay, resumable by its id). An
    error of the import itself (bad input, database gone) is raised by ``push`` or at the end.
    """

    def __init__(
        self, db: str | None = None, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES, **options: Any
    ) -> None:
        if "cancel" in options:
            raise ConfigError("PushImport cancels itself: leave the block with an exception")
        self._db = db
        self._options = options
        self._channel = ByteChannel(buffer_bytes)
        self._cancel = threading.Event()
        self._task: asyncio.Future[Summary] | None = None
        self.summary: Summary | None = None

    async def __aenter__(self) -> PushImport:
        self._task = asyncio.ensure_future(
            asyncio.to_thread(
                import_csv, self._channel, self._db, cancel=self._cancel, **self._options
            )
        )
        return self

    async def push(self, data: bytes) -> None:
        """Hand ``data`` to the import, waiting while its buffer is full."""
        assert self._task is not None, "use PushImport in an async with block"
        if self._task.done():
            await self._task  # it failed: raise its error
            raise ImportCancelled("the import has ended; no more data is accepted")
        try:
            await self._channel.send(data)
        except ImportCancelled:
            await self._task  # the engine stopped early: its error says why
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._task is not None
        if exc is None:
            self._channel.close()
            self.summary = await self._task
            return
        self._cancel.set()
        self._channel.close(ImportCancelled(f"the producer failed: {type(exc).__name__}"))
        with suppress(AntioomError):  # the producer's exception is the one to see
            await self._task
