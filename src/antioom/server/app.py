"""The HTTP service: streamed CSV uploads into the engine, live progress, import records.

``create_app()`` is a factory, so a team can mount anti-oom inside its own FastAPI or Starlette
application. Uploads are never spooled: the body is read chunk by chunk from the ASGI receive
channel and pushed into the engine's bounded :class:`ByteChannel`; while the channel is full
the handler stops reading, the server's socket buffer fills, and TCP slows the client down.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import ClientDisconnect

from antioom.api import resolve_dataset
from antioom.engine.datasets import Column, Dataset, load_datasets
from antioom.engine.pipeline import Options, Target, run_import
from antioom.engine.progress import ProgressEvent, Summary, rss_mb, utc_now
from antioom.engine.rejects import Reject, RejectsWriter, neutralise_formula
from antioom.engine.source import ByteChannel, CountingReader, DecompressedTooLarge
from antioom.errors import (
    AntioomError,
    ConfigError,
    DatabaseLost,
    DatabaseUnavailable,
    ImportCancelled,
    InputError,
    TargetError,
    TooManyRejects,
)
from antioom.history import (
    QUEUE_OWNER,
    Heartbeats,
    Origin,
    Store,
    is_live,
    open_store,
    recover,
    this_process,
)
from antioom.server.docs import add_docs
from antioom.server.guards import Guard, LoopbackOnly, origins
from antioom.server.live import FINAL, LiveImport, Registry
from antioom.server.metrics import Metrics
from antioom.server.options import CsvOptions, csv_options
from antioom.server.settings import Settings
from antioom.server.uploads import (
    BodyDecoder,
    CloseUnreadBodies,
    UnsupportedMediaType,
    file_name,
)
from antioom.sinks import open_sink

log = logging.getLogger("antioom.server")
IMPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STATIC = Path(__file__).parent / "static"
T = TypeVar("T")
REJECT_FLUSH = 1000
FILENAME_HELP = (
    "the file's name, kept in the import record (or the header X-File-Name, percent-encoded; "
    "a multipart part's filename otherwise)"
)
COUNTS = ("status", "processed", "failed", "rows", "bytes")  # what a new event must change
RESERVED_IDS = ("check",)  # GET /imports/check is the pre-flight, not a record
RULES = ("min", "max", "gt", "lt", "min_length", "max_length", "pattern", "choices")
BEARER = HTTPBearer(auto_error=False, description="an API key (ANTIOOM_API_KEYS)")
QUERY_TOKEN = APIKeyQuery(
    name="token",
    auto_error=False,
    description="the API key, for what a browser opens by URL (EventSource, downloads)",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def in_own_thread(name: str, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``func(*args)`` in a new thread. An import holds its thread for its whole run: in the
    default executor, a few slow imports (plus their uploads waiting for channel room) would
    take every worker, and /health, listings and new uploads would queue behind them."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = func(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class RecordOrigin:
    """Where an upload came from, as its record says. A multipart body names its file only in
    its part headers, after the record was first saved: :meth:`name` updates the record then,
    unless the final save came first (the lock orders the two)."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.lock = threading.Lock()
        self.final = False


def number(value: Any) -> Any:
    """A rule's Decimal bound as a JSON number."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def column_json(column: Column) -> dict[str, Any]:
    """A dataset column for ``GET /datasets``: name, type, source header, rules."""
    rules = {name: number(getattr(column, name)) for name in RULES}
    rules = {name: value for name, value in rules.items() if value is not None}
    if column.type == "decimal":
        rules.update(precision=column.precision, scale=column.scale)
    if not column.trim:
        rules["trim"] = False
    return {
        "name": column.name,
        "type": column.type,
        "source": column.header,
        "required": column.required,
        "rules": rules,
    }


def dataset_json(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "table": dataset.table,
        "mode": dataset.mode,
        "key": list(dataset.key),
        "updated_at": dataset.updated_at,
        "columns": [column_json(column) for column in dataset.columns],
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    """The anti-oom ASGI application."""
    settings = settings or Settings()
    registry = Registry(settings.max_concurrent_imports)
    guard = Guard(settings)
    allowed_origins = origins(settings.allowed_origins)
    metrics = Metrics()
    store_holder: dict[str, Store] = {}
    # Uploads wait for channel room here, not in the default executor (see in_own_thread).
    upload_pool = ThreadPoolExecutor(
        settings.max_concurrent_imports, thread_name_prefix="antioom-upload"
    )

    store_lock = threading.Lock()

    def store() -> Store:
        """The records store, opened on first use (threads race for it: one opens it)."""
        with store_lock:
            if "store" not in store_holder:
                store_holder["store"] = open_store(settings.db_url)
            return store_holder["store"]

    heartbeats = Heartbeats(store, settings.lease_s / 6)
    if settings.staging_url:  # a bad URL fails at start-up, not at the first upload
        from antioom.staging import open_staging
        from antioom.workers.tasks import configure

        open_staging(settings.staging_url)
        configure(settings.broker_url)

    async def recover_interrupted() -> None:
        """Mark imports left ``running`` by dead processes ``interrupted`` (resumable), now
        and every lease: a crashed server never leaves a record stuck."""
        while True:
            with suppress(DatabaseUnavailable):  # /health reports it; retried next round
                running_here = set(registry.imports)
                marked = await asyncio.to_thread(recover, store(), settings.lease_s, running_here)
                for import_id in marked:
                    log.info("import %s was interrupted: marked resumable", import_id)
            await asyncio.sleep(settings.lease_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with suppress(DatabaseUnavailable):  # /health reports it; connects once it is back
            await asyncio.to_thread(store)
        recovery = asyncio.create_task(recover_interrupted())
        yield
        recovery.cancel()
        heartbeats.stop()
        for live in list(registry.imports.values()):
            live.stop("the server is shutting down")
        upload_pool.shutdown(wait=False)
        if "store" in store_holder:
            store_holder["store"].close()

    app = FastAPI(
        title="anti-oom",
        version="0.1.0",
        summary="Stream CSV uploads of any size into databases in flat memory.",
        lifespan=lifespan,
        docs_url=None,  # served by add_docs, offline
        redoc_url=None,
    )
    add_docs(app, "anti-oom")
    app.state.settings = settings
    app.state.registry = registry
    if not settings.keys:
        app.add_middleware(LoopbackOnly, allowed_origins=allowed_origins)
    app.add_middleware(CloseUnreadBodies)  # outermost: the 403s above close too

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, 400)

    @app.exception_handler(DatabaseUnavailable)
    async def database_down(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, 500)

    def guard_write(request: Request, credentials: Credentials) -> None:
        guard.check(request, credentials.credentials if credentials else None, write=True)

    def guard_read(request: Request, credentials: Credentials) -> None:
        guard.check(request, credentials.credentials if credentials else None, write=False)

    def guard_url(
        request: Request,
        credentials: Credentials,
        token: Annotated[str | None, Security(QUERY_TOKEN)],
    ) -> None:
        """A read a browser opens by URL (EventSource, a download link) cannot send headers:
        the key may come as ``?token=`` instead."""
        guard.check(request, credentials.credentials if credentials else token, write=False)

    write_guard = [Depends(guard_write)]
    read_guard = [Depends(guard_read)]
    url_guard = [Depends(guard_url)]

    def record_json(record: dict[str, Any]) -> dict[str, Any]:
        record = dict(record)
        record["rejects_url"] = f"/imports/{record['id']}/rejects"
        record["rejects_total"] = record.get("failed", 0)
        for internal in ("source_key", "heartbeat_at"):
            record.pop(internal, None)
        return record

    def summary_record(summary: Summary) -> dict[str, Any]:
        data = summary.to_dict()
        data["id"] = data.pop("import_id")
        data.pop("rejects", None)
        return record_json(data)

    async def start_import(
        request: Request, target: Target, dataset_label: str, options: Options
    ) -> tuple[int, dict[str, Any]]:
        """Run one upload through the engine; returns (HTTP status, import record)."""
        import_id = request.headers.get("x-import-id") or uuid.uuid4().hex
        check_import_id(import_id)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_upload_bytes:
            raise HTTPException(413, f"upload larger than {settings.max_upload_bytes} bytes")
        try:
            decoder = BodyDecoder(request.headers.get("content-type", ""))
        except UnsupportedMediaType as exc:
            raise HTTPException(415, str(exc)) from None
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        if import_id in registry.imports:
            raise HTTPException(409, f"import {import_id} is running")
        earlier = await asyncio.to_thread(store().get, import_id)
        if earlier is not None and earlier["status"] == "completed":
            raise HTTPException(409, f"import {import_id} already completed")
        if earlier is not None and is_live(earlier, settings.lease_s):
            raise HTTPException(409, f"import {import_id} is running in another process")
        if earlier is not None and queued(earlier):
            raise HTTPException(409, f"import {import_id} is queued for the workers")
        if earlier is not None and settings.staging_url:  # parts cannot resume another shape
            raise HTTPException(
                409, f"import {import_id} exists ({earlier['status']}): choose another X-Import-Id"
            )
        live = LiveImport(import_id, ByteChannel(settings.channel_bytes))
        if not registry.try_start(live):
            raise HTTPException(
                503, "too many imports in progress, retry later", headers={"Retry-After": "5"}
            )
        metrics.in_flight.inc()
        run = run_staged if settings.staging_url else run_upload
        try:
            return await run(request, live, decoder, target, dataset_label, options)
        finally:
            registry.finish(import_id)
            metrics.in_flight.dec()

    def queued(record: dict[str, Any]) -> bool:
        """Whether the workers still have the import (queued, or running in parts)."""
        return record.get("owner") == QUEUE_OWNER and record["status"] in ("queued", "running")

    def check_import_id(import_id: str) -> None:
        if not IMPORT_ID.match(import_id):
            raise HTTPException(400, "X-Import-Id must be 1-64 letters, digits, '.', '_', '-'")
        if import_id in RESERVED_IDS:
            raise HTTPException(400, f"X-Import-Id {import_id!r} is reserved")

    def upload_origin(request: Request, decoder: BodyDecoder) -> Origin:
        """The record's origin: the file's name (``X-File-Name``, percent-encoded, or
        ``?filename=``; a multipart part's filename comes later), its size (a raw body's
        Content-Length) and the name of the API key it came with."""
        header = request.headers.get("x-file-name")
        name = file_name(header, quoted=True) or file_name(request.query_params.get("filename"))
        length = request.headers.get("content-length", "")
        raw = decoder.found_file  # a raw body is the file itself
        return Origin(
            this_process(),
            source=name,
            source_bytes=int(length) if raw and length.isdigit() else None,
            uploaded_by=getattr(request.state, "api_key_name", None),
        )

    def name_record(summary: Summary, origin: RecordOrigin, name: str) -> None:
        """Save the file name a multipart body gave, unless the final save came first."""
        with origin.lock:
            origin.origin = replace(origin.origin, source=name)
            if not origin.final:
                with suppress(DatabaseUnavailable):  # the final save has it too
                    store().save(summary, origin.origin)

    async def run_upload(
        request: Request,
        live: LiveImport,
        decoder: BodyDecoder,
        target: Target,
        dataset_label: str,
        options: Options,
    ) -> tuple[int, dict[str, Any]]:
        sink = await asyncio.to_thread(open_sink, settings.db_url)
        table = target.table or (target.dataset.table if target.dataset else dataset_label)
        summary = Summary(live.id, "running", dataset_label, table)
        summary.started_at = utc_now()  # the engine's format: records sort by it
        origin = RecordOrigin(upload_origin(request, decoder))
        kept = await asyncio.to_thread(start_record, summary, origin.origin)
        heartbeats.add(live.id)
        await registry.publish(live.id, event_state(summary_state(summary)))
        engine = in_own_thread(
            f"antioom-import-{live.id[:16]}",
            run_engine,
            live,
            sink,
            target,
            summary,
            options,
            kept,
            origin,
            decoder,
        )

        def on_name(name: str) -> None:
            if origin.origin.source is None:
                name_record(summary, origin, name)

        pump = asyncio.create_task(pump_body(request, live, decoder, on_name))
        try:
            refused = await pumped(pump, engine)
        finally:
            if not pump.done():  # this request itself was cancelled
                pump.cancel()
            result, status, kept = await engine
            heartbeats.remove(live.id)
            await asyncio.to_thread(sink.close)
        metrics.observe(result)
        await registry.publish(live.id, event_state(summary_state(result)))
        record = {**summary_record(result), "rejects_kept": kept, **origin_json(origin.origin)}
        if refused is not None:
            return refused[0], {**record, "error": refused[1]}
        if status != 200:
            return status, {"error": result.error, **record}
        return 200, record

    async def pumped(
        pump: asyncio.Task[tuple[int, str] | None], reader: asyncio.Future[Any]
    ) -> tuple[int, str] | None:
        """Wait for the body to be pumped, or for its reader to stop first (bad input,
        DELETE), then stop reading; returns the refusal of the upload itself, if any."""
        await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not pump.done():
            pump.cancel()
            await asyncio.wait({pump})
        return None if pump.cancelled() else pump.result()

    async def run_staged(
        request: Request,
        live: LiveImport,
        decoder: BodyDecoder,
        target: Target,
        dataset_label: str,
        options: Options,
    ) -> tuple[int, dict[str, Any]]:
        """Stage the upload (streamed) and queue it for the workers: 202 and the queued
        record. Until it is staged the record is this process's, ``running``: if the server
        dies mid-upload, recovery marks it ``interrupted`` like any other."""
        from antioom.staging import open_staging
        from antioom.workers.jobs import job_for, queue, stage
        from antioom.workers.tasks import enqueue

        assert settings.staging_url is not None
        origin = upload_origin(request, decoder)
        table = target.table or (target.dataset.table if target.dataset else dataset_label)
        summary = Summary(live.id, "running", dataset_label, table, started_at=utc_now())
        summary.notes = ["staging the upload for the workers"]
        await asyncio.to_thread(start_record, summary, origin)
        heartbeats.add(live.id)
        await registry.publish(live.id, event_state(summary_state(summary)))
        job = job_for(
            live.id,
            settings.db_url,
            settings.staging_url,
            target,
            replace(options, batch_size=settings.batch_size),
            parts=settings.parts,
            source=origin.source,
            uploaded_by=origin.uploaded_by,
            rejects_kept=settings.stored_rejects_per_import,
        )
        reader = CountingReader(
            live.channel, max_decompressed_bytes=settings.max_decompressed_bytes
        )
        staging = in_own_thread(f"antioom-stage-{live.id[:16]}", stage, reader, job)
        pump = asyncio.create_task(pump_body(request, live, decoder))
        status, error = 202, None
        try:
            refused = await pumped(pump, staging)
            try:
                job = replace(await staging, source=origin.source or decoder.file_name)
            except AntioomError as exc:
                status, error = refused or (staging_status(exc), str(exc))
            else:
                if refused is not None:
                    status, error = refused
                    await asyncio.to_thread(open_staging(job.staging).delete, job.key)
                else:
                    summary = await asyncio.to_thread(queue, job, enqueue)
        except Exception as exc:  # the staging storage or the broker is away
            log.warning("import %s could not be staged or queued: %s", live.id, exc)
            status, error = 503, f"could not stage or queue the upload: {exc}"
        finally:
            if not pump.done():  # this request itself was cancelled
                pump.cancel()
            live.channel.abandon()
            heartbeats.remove(live.id)
        if status != 202:
            summary.status = "aborted" if status == 200 else "failed"
            summary.error, summary.finished_at = error, utc_now()
            await asyncio.to_thread(store().save, summary)
        await registry.publish(live.id, event_state(summary_state(summary)))
        record = {**summary_record(summary), **origin_json(replace(origin, source=job.source))}
        return status, record if status in (200, 202) else {"error": error, **record}

    def staging_status(exc: AntioomError) -> int:
        """The HTTP status of an upload that could not be staged, by the error's type."""
        if isinstance(exc, ImportCancelled):
            return 200  # DELETE: the aborted record, as an import cancelled mid-run answers
        if isinstance(exc, DecompressedTooLarge):
            return 413
        if isinstance(exc, InputError):
            return 400
        return 503  # the staging storage failed

    async def send(channel: ByteChannel, piece: bytes) -> None:
        """``channel.send``, but waiting for room in the app's own pool."""
        if (
            channel.buffered + len(piece) <= channel.max_bytes
            and len(piece) <= channel.max_bytes // 4
        ):
            channel.send_blocking(piece)  # there is room: returns at once
        else:
            await asyncio.get_running_loop().run_in_executor(
                upload_pool, channel.send_blocking, piece
            )

    def origin_json(origin: Origin) -> dict[str, Any]:
        return {
            "source": origin.source,
            "source_bytes": origin.source_bytes,
            "uploaded_by": origin.uploaded_by,
        }

    async def pump_body(
        request: Request,
        live: LiveImport,
        decoder: BodyDecoder,
        on_name: Callable[[str], None] | None = None,
    ) -> tuple[int, str] | None:
        """Body chunks → CSV bytes → the channel, ending it either way. Returns the HTTP status
        and reason when the upload itself is refused (too large, stalled).

        Every failure closes the channel with an error, never a clean end: the engine must not
        take a record cut off by the failure for the file's last one."""
        try:
            received = 0
            chunks = request.stream()
            while True:
                try:
                    async with asyncio.timeout(settings.body_idle_timeout_s):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:  # a stalled client must not hold an import slot
                    reason = f"no data received for {settings.body_idle_timeout_s:g} s"
                    live.channel.close(InputError(reason))
                    return 408, reason
                received += len(chunk)
                if received > settings.max_upload_bytes:
                    reason = f"upload larger than {settings.max_upload_bytes} bytes"
                    live.channel.close(ImportCancelled(reason))
                    return 413, reason
                pieces = decoder.feed(chunk)
                if decoder.file_name and on_name is not None:  # before the file's first byte
                    await asyncio.to_thread(on_name, decoder.file_name)
                    on_name = None
                for piece in pieces:
                    await send(live.channel, piece)
            decoder.finish()
            live.channel.close()
        except ImportCancelled:
            pass  # the engine stopped first (bad input, DELETE); its summary says why
        except ClientDisconnect:
            live.stop("the client disconnected mid-upload")
        except InputError as exc:
            live.channel.close(exc)
        except BaseException as exc:
            live.stop(f"upload failed: {type(exc).__name__}")
            raise
        return None

    def start_record(summary: Summary, origin: Origin) -> int:
        """Save the record of a starting import; returns the rejects it keeps. A resumed import
        keeps those of the records its ledger holds: the later ones are reported again."""
        import_id = summary.import_id
        kept = 0
        if store().exists(import_id):
            committed = store().committed(import_id)
            kept = store().drop_rejects_after(import_id, committed.end_record)
        store().save(summary, origin, rejects_kept=kept)
        return kept

    def run_engine(
        live: LiveImport,
        sink: Any,
        target: Target,
        initial: Summary,
        options: Options,
        kept: int,
        origin: RecordOrigin,
        decoder: BodyDecoder,
    ) -> tuple[Summary, int, int]:
        """The engine, in its own thread. Always returns the final (stored) summary, the
        HTTP status it calls for (decided by the error's type rather than its message), and
        how many of its rejects are kept."""
        dataset_label = initial.dataset
        pending: list[Reject] = []
        stored = kept

        def flush() -> None:
            nonlocal stored
            room = settings.stored_rejects_per_import - stored
            if room > 0 and pending:
                store().add_rejects(live.id, pending[:room])
                stored += min(room, len(pending))
            pending.clear()

        def on_reject(reject: Reject) -> None:
            if stored + len(pending) < settings.stored_rejects_per_import:
                pending.append(reject)
            if len(pending) >= REJECT_FLUSH:
                flush()

        def on_progress(event: ProgressEvent) -> None:
            registry.publish_threadsafe(live.id, event_state(event.to_dict(), dataset_label))

        reader = CountingReader(
            live.channel, max_decompressed_bytes=settings.max_decompressed_bytes
        )
        status = 200
        try:
            summary = run_import(
                reader,
                sink,
                target,
                replace(options, batch_size=settings.batch_size, import_id=live.id),
                on_progress=on_progress,
                on_reject=on_reject,
                flush_rejects=flush,
                cancel=live.cancel,
            )
        except AntioomError as exc:
            summary = getattr(exc, "summary", None) or replace(initial, status="failed")
            summary.error = str(exc)
            if isinstance(exc, ImportCancelled):
                summary.status = "aborted"
            elif isinstance(exc, DecompressedTooLarge):
                status = 413
            elif isinstance(exc, DatabaseUnavailable | DatabaseLost):
                status = 503
            elif isinstance(exc, TargetError | TooManyRejects):  # well-formed, but refused
                status = 422
            else:
                status = 400
        except Exception as exc:  # a bug: record it rather than leave the import "running"
            summary = replace(initial, status="failed", error=f"internal error: {exc!r}")
            summary.finished_at = utc_now()
            status = 500
        finally:
            live.channel.abandon()
        with origin.lock:
            origin.final = True
            if origin.origin.source_bytes is None and decoder.complete:
                origin.origin = replace(origin.origin, source_bytes=decoder.file_bytes)
            save_final(summary, flush, lambda: stored, origin.origin)
        return summary, status, stored

    def save_final(
        summary: Summary, flush: Callable[[], None], kept: Callable[[], int], origin: Origin
    ) -> None:
        """Save the final record, retrying while the database is away. If it stays away, the
        record is left ``running``; recovery later marks it ``interrupted`` from the ledger."""
        for delay in (0.5, 1.0, 2.0, 0.0):
            try:
                flush()
                store().save(summary, origin, rejects_kept=kept())
                return
            except DatabaseUnavailable:
                time.sleep(delay)
        log.warning("could not save the final record of import %s", summary.import_id)

    def summary_state(summary: Summary) -> dict[str, Any]:
        data = summary.to_dict()
        data.pop("rejects", None)
        return data

    def event_state(data: dict[str, Any], dataset: str | None = None) -> dict[str, Any]:
        """Progress as the seed's SSE clients expect it, plus our fields."""
        return {
            "id": data.get("import_id"),
            "status": data.get("status"),
            "dataset": dataset or data.get("dataset"),
            "processed": data.get("processed", 0),
            "failed": data.get("failed", 0),
            "rows": data.get("rows", 0),
            "bytes": data.get("bytes", 0),
            "rows_per_s": data.get("rows_per_s", 0.0),
            "memoryMB": data.get("rss_mb") or rss_mb(),
            "timestamp": int(datetime.now(UTC).timestamp() * 1000),
        }

    def target_for(
        dataset: str | None, table: str | None, mode: str | None, default_dataset: str | None
    ) -> tuple[Target, str]:
        if mode not in (None, "insert", "upsert"):
            raise HTTPException(400, "mode must be insert or upsert")
        mode_value: Literal["insert", "upsert"] | None = mode  # type: ignore[assignment]
        if dataset is None and table is None:
            dataset = default_dataset
        try:
            if dataset is not None:
                found = resolve_dataset(dataset, settings.datasets)
                found.with_options(mode=mode_value)  # upsert needs a key: say so now
                return Target(dataset=found, mode=mode_value), found.name
            if table is None:
                raise ConfigError("choose a dataset (?dataset=NAME) or a table (?table=NAME)")
            from antioom.engine.datasets import check_identifier

            check_identifier(table, "table name")
            if mode_value == "upsert":
                raise ConfigError(
                    "mode upsert needs a key: a table import inserts; upsert into a dataset "
                    "that declares one"
                )
            return Target(table=table, mode=mode_value), table
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.post(
        "/imports",
        summary="Stream a CSV upload into the database",
        tags=["imports"],
        dependencies=write_guard,
    )
    async def create_import(
        request: Request,
        csv_opts: Annotated[CsvOptions, Depends(csv_options)],
        dataset: str | None = Query(None, description="dataset name"),
        table: str | None = Query(None, description="table name (columns inferred)"),
        mode: str | None = Query(None, description="insert or upsert"),
        filename: str | None = Query(None, description=FILENAME_HELP),
    ) -> JSONResponse:
        """The body is the CSV (raw, gzip/zstd, or a multipart `file` field). The CSV options
        default to detection, like `antioom import`; a bad one is a 400 before the body is
        read. The record's `dialect` says how the file was read (and what was detected)."""
        target, label = target_for(dataset, table, mode, None)
        target = csv_opts.apply(target)
        status, record = await start_import(request, target, label, csv_opts.options())
        queued = {"Location": f"/imports/{record['id']}"} if status == 202 else None
        return JSONResponse(record, status, headers=queued)

    @app.post(
        "/upload",
        summary="The seed's upload endpoint (products dataset)",
        tags=["seed"],
        dependencies=write_guard,
    )
    async def upload(
        request: Request,
        csv_opts: Annotated[CsvOptions, Depends(csv_options)],
        dataset: str | None = Query(None, description="dataset name (default: products)"),
        mode: str | None = Query(None, description="insert or upsert"),
        filename: str | None = Query(None, description=FILENAME_HELP),
    ) -> JSONResponse:
        target, label = target_for(dataset, None, mode, "products")
        target = csv_opts.apply(target)
        status, record = await start_import(request, target, label, csv_opts.options())
        if status != 200:
            return JSONResponse(record, status)
        stats = {"processed": record["processed"], "failed": record["failed"]}
        return JSONResponse({"message": "Upload completed", "stats": stats, **record})

    @app.get(
        "/imports/check",
        summary="Check an upload before sending its body (pre-flight)",
        tags=["imports"],
        dependencies=write_guard,
    )
    async def check_import(
        request: Request,
        csv_opts: Annotated[CsvOptions, Depends(csv_options)],
        dataset: str | None = Query(None, description="dataset name"),
        table: str | None = Query(None, description="table name (columns inferred)"),
        mode: str | None = Query(None, description="insert or upsert"),
        size: int | None = Query(None, ge=0, description="the file's size in bytes"),
    ) -> dict[str, Any]:
        """What `POST /imports` checks before reading a body, with the same query (and
        `X-Import-Id`, `Authorization`): the target, the mode, the CSV options, the size
        against the upload limit, the key, and that the database answers. 200 means the
        upload would start; errors are those the upload would get."""
        import_id = request.headers.get("x-import-id")
        if import_id is not None:
            check_import_id(import_id)
        target, label = target_for(dataset, table, mode, None)
        target = csv_opts.apply(target)
        if size is not None and size > settings.max_upload_bytes:
            raise HTTPException(413, f"upload larger than {settings.max_upload_bytes} bytes")
        await asyncio.to_thread(lambda: store().ping())  # 503 when the database is away
        found = target.dataset
        return {
            "ok": True,
            "dataset": found.name if found else None,
            "table": target.table or (found.table if found else label),
            "mode": target.mode or (found.mode if found else "insert"),
            "uploaded_by": getattr(request.state, "api_key_name", None),
        }

    @app.get(
        "/datasets", summary="Declared datasets and their columns", tags=["datasets"],
        dependencies=read_guard,
    )  # fmt: skip
    async def list_datasets() -> dict[str, Any]:
        """The datasets an upload may name (`?dataset=`): the built-in ones and those of the
        datasets file, with their table, mode, key and columns (type, required, rules)."""
        try:
            found = load_datasets(settings.datasets or os.environ.get("ANTIOOM_DATASETS") or None)
        except ConfigError as exc:
            raise HTTPException(500, str(exc)) from None
        return {
            "datasets": [dataset_json(found[name]) for name in sorted(found)],
            "default": "products" if "products" in found else None,
        }

    @app.get("/imports", summary="Imports, newest first", tags=["imports"], dependencies=read_guard)
    async def list_imports(
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        records, total = await asyncio.to_thread(store().list, limit, offset)
        return {
            "imports": [with_live(r) for r in records],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    def with_live(record: dict[str, Any]) -> dict[str, Any]:
        live = registry.imports.get(record["id"])
        if live is not None and live.state:
            record = {
                **record,
                **{
                    k: live.state[k] for k in ("processed", "failed", "rows", "bytes", "rows_per_s")
                },
            }
        return record_json(record)

    async def get_record(import_id: str) -> dict[str, Any]:
        record = await asyncio.to_thread(store().get, import_id)
        if record is None:
            raise HTTPException(404, f"no import {import_id}")
        return record

    @app.get(
        "/imports/{import_id}", summary="One import", tags=["imports"], dependencies=read_guard
    )
    async def get_import(import_id: str) -> dict[str, Any]:
        record = await asyncio.to_thread(store().get, import_id)
        live = registry.imports.get(import_id)
        if record is None and live is not None:  # accepted; its record is being written
            record = {"processed": 0, "failed": 0, **live.state, "id": import_id}
            record["status"] = "running"
        if record is None:
            raise HTTPException(404, f"no import {import_id}")
        return with_live(record)

    @app.delete(
        "/imports/{import_id}",
        summary="Cancel a running import",
        tags=["imports"],
        dependencies=write_guard,
    )
    async def cancel_import(import_id: str) -> JSONResponse:
        live = registry.imports.get(import_id)
        if live is None:
            record: dict[str, Any] | None = await get_record(import_id)
        else:  # a staged upload's request may not have answered yet, its job queued already
            record = await asyncio.to_thread(store().get, import_id)
        if record is not None and queued(record):  # the workers stop its parts at their next batch
            from antioom.workers.jobs import cancel

            reason = "import cancelled (DELETE)"
            if await asyncio.to_thread(cancel, settings.db_url, import_id, reason):
                return JSONResponse({"id": import_id, "status": "cancelling"}, 202)
            record = await get_record(import_id)
        if live is None:
            status = record["status"] if record else "unknown"
            raise HTTPException(409, f"import {import_id} is not running ({status})")
        live.stop("import cancelled (DELETE)")
        return JSONResponse({"id": import_id, "status": "cancelling"}, 202)

    @app.get(
        "/imports/{import_id}/rejects",
        summary="Rejected rows as CSV",
        tags=["imports"],
        dependencies=url_guard,
    )
    async def get_rejects(
        import_id: str,
        format: Literal["csv", "json"] = Query("csv", description="csv (a download) or json"),
        limit: int = Query(100, ge=1, le=1000, description="json: rows per page"),
        offset: int = Query(0, ge=0, description="json: rows to skip"),
        reason: str | None = Query(None, description="json: only the rejects of this reason"),
    ) -> Response:
        """The kept rejects (at most `stored_rejects_per_import`), in record order; the
        headers `X-Rejects-Kept` and `X-Rejects-Total` say whether some were not kept.
        `format=json` answers one page: `{"rejects": [{record, line, column, reason, raw}],
        "kept", "total", ...}`."""
        record = await get_record(import_id)
        kept_total = {
            "X-Rejects-Kept": str(record.get("rejects_kept") or 0),
            "X-Rejects-Total": str(record.get("failed") or 0),
        }
        if format == "json":
            rows = await asyncio.to_thread(store().reject_page, import_id, limit, offset, reason)
            names = ("record", "line", "column", "reason", "raw")
            page = [dict(zip(names, row, strict=True)) for row in rows]
            return JSONResponse(
                {
                    "id": import_id,
                    "rejects": page,
                    "limit": limit,
                    "offset": offset,
                    "reason": reason,
                    "kept": int(kept_total["X-Rejects-Kept"]),
                    "total": int(kept_total["X-Rejects-Total"]),
                },
                headers=kept_total,
            )

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(RejectsWriter.HEADER)
            for row in store().rejects(import_id):
                writer.writerow(["" if v is None else neutralise_formula(str(v)) for v in row])
                if buffer.tell() > 64 << 10:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        return StreamingResponse(
            lines(),
            media_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="{import_id}-rejects.csv"',
                **kept_total,
            },
        )

    @app.get(
        "/imports/{import_id}/rejects/summary",
        summary="Rejected rows counted per reason",
        tags=["imports"],
        dependencies=read_guard,
    )
    async def rejects_summary(import_id: str) -> dict[str, Any]:
        """How many of the kept rejects each reason has (most frequent first), with how many
        were kept of how many (`cap`: the most an import keeps)."""
        record = with_live(await get_record(import_id))
        reasons = await asyncio.to_thread(store().reject_reasons, import_id)
        return {
            "id": import_id,
            "status": record["status"],
            "kept": sum(count for _, count in reasons),
            "total": record.get("failed") or 0,
            "cap": settings.stored_rejects_per_import,
            "reasons": [{"reason": reason, "count": count} for reason, count in reasons],
        }

    @app.get(
        "/imports/{import_id}/events",
        summary="SSE progress of one import",
        tags=["events"],
        dependencies=url_guard,
    )
    async def import_events(import_id: str) -> EventSourceResponse:
        live = registry.imports.get(import_id)
        after = registry.seq
        if live is None:
            record = await get_record(import_id)
            return EventSourceResponse(polled(record), ping=15)
        current = dict(live.state)

        async def stream() -> AsyncIterator[ServerSentEvent]:
            yield sse(current)
            if current.get("status") in FINAL:
                return
            await asyncio.sleep(settings.progress_interval_s)  # the interval holds from the first
            async for state in registry.watch(import_id, settings.progress_interval_s, after=after):
                yield sse(state)

        return EventSourceResponse(stream(), ping=15)

    async def polled(record: dict[str, Any]) -> AsyncIterator[ServerSentEvent]:
        """The events of an import this process does not run (the workers', another
        server's): its record, read again every progress interval until it is final."""
        state = event_state({**record, "import_id": record["id"]})
        yield sse(state)
        while state.get("status") not in FINAL:
            await asyncio.sleep(max(settings.progress_interval_s, 0.5))
            with suppress(DatabaseUnavailable):
                found = await asyncio.to_thread(store().get, record["id"])
                if found is not None:
                    fresh = event_state({**found, "import_id": found["id"]})
                    if [fresh[k] for k in COUNTS] != [state[k] for k in COUNTS]:
                        yield sse(fresh)
                    state = fresh

    @app.get(
        "/events",
        summary="The seed's global progress feed (SSE)",
        tags=["events"],
        dependencies=url_guard,
    )
    async def all_events() -> EventSourceResponse:
        after = registry.seq

        async def stream() -> AsyncIterator[ServerSentEvent]:
            async for state in registry.watch(None, settings.progress_interval_s, after=after):
                yield ServerSentEvent(json.dumps(state))

        return EventSourceResponse(stream(), ping=15)

    def sse(state: dict[str, Any]) -> ServerSentEvent:
        status = state.get("status")
        return ServerSentEvent(json.dumps(state), event=status if status in FINAL else "progress")

    @app.get("/health", summary="Liveness, database and memory", tags=["ops"])
    async def health() -> JSONResponse:
        memory = {"rss_mb": rss_mb(), "imports_in_flight": len(registry.imports)}
        try:
            await asyncio.to_thread(lambda: store().ping())
        except DatabaseUnavailable as exc:
            return JSONResponse(
                {"status": "degraded", "db": "down", "error": str(exc), "memory": memory}, 503
            )
        return JSONResponse({"status": "ok", "db": "ok", "memory": memory})

    @app.get("/metrics", summary="Prometheus metrics", tags=["ops"])
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
