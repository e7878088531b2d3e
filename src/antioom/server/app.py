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
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
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
from antioom.engine.pipeline import Options, Target, run_import
from antioom.engine.progress import ProgressEvent, Summary, rss_mb, utc_now
from antioom.engine.records import Dialect
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
)
from antioom.history import Heartbeats, Origin, Store, is_live, open_store, recover, this_process
from antioom.server.docs import add_docs
from antioom.server.guards import Guard, LoopbackOnly, origins
from antioom.server.live import FINAL, LiveImport, Registry
from antioom.server.metrics import Metrics
from antioom.server.options import CsvOptions, csv_options
from antioom.server.settings import Settings
from antioom.server.uploads import BodyDecoder, UnsupportedMediaType
from antioom.sinks import open_sink

log = logging.getLogger("antioom.server")
IMPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STATIC = Path(__file__).parent / "static"
T = TypeVar("T")
REJECT_FLUSH = 1000
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
        request: Request, target: Target, dataset_label: str, dialect: Dialect
    ) -> tuple[int, dict[str, Any]]:
        """Run one upload through the engine; returns (HTTP status, import record)."""
        import_id = request.headers.get("x-import-id") or uuid.uuid4().hex
        if not IMPORT_ID.match(import_id):
            raise HTTPException(400, "X-Import-Id must be 1-64 letters, digits, '.', '_', '-'")
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
        live = LiveImport(import_id, ByteChannel(settings.channel_bytes))
        if not registry.try_start(live):
            raise HTTPException(
                503, "too many imports in progress, retry later", headers={"Retry-After": "5"}
            )
        metrics.in_flight.inc()
        try:
            return await run_upload(request, live, decoder, target, dataset_label, dialect)
        finally:
            registry.finish(import_id)
            metrics.in_flight.dec()

    async def run_upload(
        request: Request,
        live: LiveImport,
        decoder: BodyDecoder,
        target: Target,
        dataset_label: str,
        dialect: Dialect,
    ) -> tuple[int, dict[str, Any]]:
        sink = await asyncio.to_thread(open_sink, settings.db_url)
        table = target.table or (target.dataset.table if target.dataset else dataset_label)
        summary = Summary(live.id, "running", dataset_label, table)
        summary.started_at = utc_now()  # the engine's format: records sort by it
        kept = await asyncio.to_thread(start_record, summary)
        heartbeats.add(live.id)
        await registry.publish(live.id, event_state(summary_state(summary)))
        engine = in_own_thread(
            f"antioom-import-{live.id[:16]}", run_engine, live, sink, target, summary, dialect, kept
        )
        pump = asyncio.create_task(pump_body(request, live, decoder))
        try:
            both: set[asyncio.Future[Any]] = {pump, engine}
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():  # the engine stopped first (bad input, DELETE): stop reading
                pump.cancel()
                await asyncio.wait({pump})
            refused = None if pump.cancelled() else pump.result()
        finally:
            if not pump.done():  # this request itself was cancelled
                pump.cancel()
            result, status, kept = await engine
            heartbeats.remove(live.id)
            await asyncio.to_thread(sink.close)
        metrics.observe(result)
        await registry.publish(live.id, event_state(summary_state(result)))
        record = {**summary_record(result), "rejects_kept": kept}
        if refused is not None:
            return refused[0], {**record, "error": refused[1]}
        if status != 200:
            return status, {"error": result.error, **record}
        return 200, record

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

    async def pump_body(
        request: Request, live: LiveImport, decoder: BodyDecoder
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
                for piece in decoder.feed(chunk):
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

    def start_record(summary: Summary) -> int:
        """Save the record of a starting import; returns the rejects it keeps. A resumed import
        keeps those of the records its ledger holds: the later ones are reported again."""
        import_id = summary.import_id
        kept = 0
        if store().exists(import_id):
            committed = store().committed(import_id)
            kept = store().drop_rejects_after(import_id, committed.records)
        store().save(summary, Origin(this_process()), rejects_kept=kept)
        return kept

    def run_engine(
        live: LiveImport,
        sink: Any,
        target: Target,
        initial: Summary,
        dialect: Dialect,
        kept: int,
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
                Options(dialect=dialect, batch_size=settings.batch_size, import_id=live.id),
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
            elif isinstance(exc, TargetError):  # the request is well-formed; the table refuses it
                status = 422
            else:
                status = 400
        except Exception as exc:  # a bug: record it rather than leave the import "running"
            summary = replace(initial, status="failed", error=f"internal error: {exc!r}")
            summary.finished_at = utc_now()
            status = 500
        finally:
            live.channel.abandon()
        save_final(summary, flush, lambda: stored)
        return summary, status, stored

    def save_final(summary: Summary, flush: Callable[[], None], kept: Callable[[], int]) -> None:
        """Save the final record, retrying while the database is away. If it stays away, the
        record is left ``running``; recovery later marks it ``interrupted`` from the ledger."""
        for delay in (0.5, 1.0, 2.0, 0.0):
            try:
                flush()
                store().save(summary, rejects_kept=kept())
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
                return Target(dataset=found, mode=mode_value), found.name
            if table is None:
                raise ConfigError("choose a dataset (?dataset=NAME) or a table (?table=NAME)")
            from antioom.engine.datasets import check_identifier

            check_identifier(table, "table name")
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
    ) -> JSONResponse:
        """The body is the CSV (raw, gzip/zstd, or a multipart `file` field). The CSV options
        default to detection, like `antioom import`; a bad one is a 400 before the body is
        read. The record's `dialect` says how the file was read (and what was detected)."""
        target, label = target_for(dataset, table, mode, None)
        target = csv_opts.apply(target)
        status, record = await start_import(request, target, label, csv_opts.dialect)
        return JSONResponse(record, status)

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
    ) -> JSONResponse:
        target, label = target_for(dataset, None, mode, "products")
        target = csv_opts.apply(target)
        status, record = await start_import(request, target, label, csv_opts.dialect)
        if status != 200:
            return JSONResponse(record, status)
        stats = {"processed": record["processed"], "failed": record["failed"]}
        return JSONResponse({"message": "Upload completed", "stats": stats, **record})

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
        return with_live(await get_record(import_id))

    @app.delete(
        "/imports/{import_id}",
        summary="Cancel a running import",
        tags=["imports"],
        dependencies=write_guard,
    )
    async def cancel_import(import_id: str) -> JSONResponse:
        live = registry.imports.get(import_id)
        if live is None:
            record = await get_record(import_id)
            raise HTTPException(409, f"import {import_id} is not running ({record['status']})")
        live.stop("import cancelled (DELETE)")
        return JSONResponse({"id": import_id, "status": "cancelling"}, 202)

    @app.get(
        "/imports/{import_id}/rejects",
        summary="Rejected rows as CSV",
        tags=["imports"],
        dependencies=url_guard,
    )
    async def get_rejects(import_id: str) -> StreamingResponse:
        """The kept rejects (at most `stored_rejects_per_import`); the headers
        `X-Rejects-Kept` and `X-Rejects-Total` say whether some were not kept."""
        record = await get_record(import_id)

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
                "X-Rejects-Kept": str(record.get("rejects_kept") or 0),
                "X-Rejects-Total": str(record.get("failed") or 0),
            },
        )

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
            final = event_state({**record, "import_id": record["id"]})

            async def finished() -> AsyncIterator[ServerSentEvent]:
                yield sse(final)

            return EventSourceResponse(finished())
        current = dict(live.state)

        async def stream() -> AsyncIterator[ServerSentEvent]:
            yield sse(current)
            if current.get("status") in FINAL:
                return
            await asyncio.sleep(settings.progress_interval_s)  # the interval holds from the first
            async for state in registry.watch(import_id, settings.progress_interval_s, after=after):
                yield sse(state)

        return EventSourceResponse(stream(), ping=15)

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
