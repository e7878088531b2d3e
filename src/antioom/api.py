"""The embedding API: one call imports a CSV path or binary stream into a database URL.

    from antioom import import_csv
    summary = import_csv("products.csv", "postgresql://localhost/shop", dataset="products",
                         on_progress=print)

The CLI and the HTTP server are thin layers over this function.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import replace
from pathlib import Path
from typing import Literal

from antioom.engine.datasets import Dataset, load_datasets
from antioom.engine.pipeline import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_SIZE,
    Options,
    Target,
    run_import,
    splittable,
)
from antioom.engine.progress import ProgressEvent, Summary, utc_now
from antioom.engine.records import Dialect
from antioom.engine.rejects import Reject
from antioom.engine.source import GZIP_MAGIC, ZSTD_MAGIC, CountingReader, Readable, open_path
from antioom.errors import AntioomError, ConfigError, DatabaseUnavailable
from antioom.history import (
    Heartbeats,
    Origin,
    Store,
    check_can_run,
    interrupt,
    open_store,
    source_key,
    this_process,
)
from antioom.parallel import import_in_parts, plan_file
from antioom.sinks import open_sink
from antioom.sinks.dry_run import DryRunSink
from antioom.workers.jobs import DEFAULT_PARTS, Enqueue

DEFAULT_DB = "sqlite:///antioom.db"


def default_db() -> str:
    """``ANTIOOM_DB_URL`` if set, else the embedded SQLite default."""
    return os.environ.get("ANTIOOM_DB_URL") or DEFAULT_DB


def resolve_dataset(name: str, datasets_file: str | Path | None = None) -> Dataset:
    """Find a dataset by name among the built-ins and ``datasets_file`` (or ANTIOOM_DATASETS)."""
    datasets = load_datasets(datasets_file or os.environ.get("ANTIOOM_DATASETS") or None)
    if name not in datasets:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(datasets))}")
    return datasets[name]


def import_csv(
    source: str | Path | Readable,
    db: str | None = None,
    *,
    dataset: str | Dataset | None = None,
    table: str | None = None,
    mode: Literal["insert", "upsert"] | None = None,
    key: tuple[str, ...] | None = None,
    types: Mapping[str, str] | None = None,
    infer: bool = True,
    datasets_file: str | Path | None = None,
    dialect: Dialect | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    import_id: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    on_reject: Callable[[Reject], None] | None = None,
    flush_rejects: Callable[[], None] | None = None,
    cancel: threading.Event | None = None,
    keep_record: bool = True,
    refused_before_commit: bool = False,
    renames: Mapping[str, str] | None = None,
    alter: bool = False,
    reset: Literal["drop", "truncate"] | None = None,
    limit: int | None = None,
    max_rejects: int | None = None,
    dry_run: bool = False,
    workers: int = 1,
) -> Summary:
    """Stream ``source`` (a path, ``-`` for stdin, or a binary stream) into ``db``.

    Give ``dataset`` (a name or a :class:`Dataset`) or ``table`` (columns inferred; ``types``
    forces some, e.g. ``{"zip": "string"}``, and ``infer=False`` makes all text). Returns
    the summary; raises an :class:`~antioom.errors.AntioomError` on fatal errors, with the
    partial summary as ``error.summary``. The database is connected before any byte is read.

    ``import_id`` names the import; an id whose earlier run was interrupted is resumed: only
    the rows not yet committed are written (see :func:`~antioom.engine.pipeline.run_import`).
    With ``keep_record``, the import's record is kept in the database (``antioom_imports``),
    with a heartbeat while it runs, as the server does: that is what ``--resume`` finds.
    ``refused_before_commit``: see :func:`~antioom.engine.pipeline.run_import` (for rejects
    written outside the target database, as the CLI's ``--rejects`` file).

    ``renames`` maps header (or column) names to column names (``table`` imports); ``alter``
    adds the columns an existing table lacks; ``reset`` empties (``"truncate"``) or drops the
    table first; ``limit`` imports the first N records; ``max_rejects`` stops the import with
    :class:`~antioom.errors.TooManyRejects` once more rows are rejected (0: at the first);
    ``dry_run`` reads and validates everything and writes nothing (no database needed).

    ``workers`` > 1 imports a local file in up to that many parts side by side (see
    :mod:`antioom.parallel`), when it can be: an uncompressed regular file, an insert without
    a key, limit or reject cap, into a database that takes several writers (not SQLite);
    otherwise it is imported in one pass and ``notes`` says why. In parts, ``on_reject`` is
    called from the parts' threads (one at a time), not in record order, and
    ``refused_before_commit`` does not apply. An upsert or keyed insert is parsed once and
    written by ``workers`` connections, keys partitioned among them (see
    :mod:`antioom.engine.partition`), where the database allows it (PostgreSQL, no unique
    index but the key's, text or integer keys compared exactly, no triggers) and there is no
    reject cap; ``on_reject`` is then called from the writers' threads, one at a time.
    """
    import_id = import_id or uuid.uuid4().hex
    target, options = _target_and_options(
        import_id,
        dataset=dataset,
        table=table,
        mode=mode,
        key=key,
        types=types,
        infer=infer,
        datasets_file=datasets_file,
        dialect=dialect,
        batch_size=batch_size,
        batch_bytes=batch_bytes,
        renames=renames,
        alter=alter,
        reset=reset,
        limit=limit,
        max_rejects=max_rejects,
    )
    dataset = target.dataset
    db = db or default_db()
    with ExitStack() as stack:
        sink = stack.enter_context(DryRunSink() if dry_run else open_sink(db))
        store = None
        label = dataset.name if dataset else (table or "")
        # the target table, as --resume looks it up (a dataset's may be overridden)
        into = table or (dataset.table if dataset else "")
        if keep_record and not dry_run:
            store = open_store(db)
            stack.callback(store.close)
            name = str(source) if isinstance(source, str | Path) else None
            origin = Origin(
                this_process(),
                source=name,
                source_bytes=_file_size(name),
                source_key=source_key(name) if name else None,
            )
            check_can_run(store, import_id, origin.source_key)
            store.save(Summary(import_id, "running", label, into, started_at=utc_now()), origin)
            heartbeats = Heartbeats(lambda: store)
            heartbeats.add(import_id)
            stack.callback(heartbeats.stop)
        reader = open_path(source) if isinstance(source, str | Path) else CountingReader(source)
        stack.callback(reader.close)
        began = time.monotonic()
        try:
            in_parts, why_not = None, None
            by_key = (
                workers > 1
                and not dry_run
                and _keyed(target)
                and not _one_writer(db)
                and max_rejects is None  # which rows land before the cap: not timing's call
            )
            if by_key:
                options = replace(options, writers=workers)
            elif workers > 1 and not dry_run:
                why_not = _why_one_pass(source, db, target, options)
                if why_not is None:
                    in_parts = plan_file(str(source), options, workers)
                    why_not = in_parts.why_one_part if len(in_parts.parts) == 1 else None
            if in_parts is not None and why_not is None:
                summary = import_in_parts(
                    str(source),
                    db,
                    in_parts,
                    target,
                    options,
                    store,
                    on_progress=on_progress,
                    on_reject=on_reject,
                    flush_rejects=flush_rejects,
                    cancel=cancel,
                )
                summary.duration_s = round(time.monotonic() - began, 3)  # the plan's scan too
                summary.rows_per_s = round(summary.rows / max(summary.duration_s, 1e-9), 1)
            else:
                summary = run_import(
                    reader,
                    sink,
                    target,
                    options,
                    on_progress=on_progress,
                    on_reject=on_reject,
                    flush_rejects=flush_rejects,
                    cancel=cancel,
                    refused_before_commit=refused_before_commit,
                    open_writer=(lambda: open_sink(db)) if by_key else None,
                )
                if why_not is not None:
                    summary.notes.append(f"imported in one pass: {why_not}")
        except AntioomError as exc:
            ended: Summary | None = getattr(exc, "summary", None)
            if ended is None:  # it failed before the pipeline ran (reading the head, planning)
                ended = Summary(import_id, "failed", label, into, error=str(exc))
                ended.started_at, ended.finished_at = utc_now(), utc_now()
            if store is not None:
                _save_quietly(store, ended)
            raise
        except KeyboardInterrupt:
            if store is not None:
                with suppress(AntioomError):
                    interrupt(store, import_id)
            raise
        if store is not None:
            _save_quietly(store, summary)
        summary.dry_run = dry_run
        return summary


def queue_csv(
    source: str | Path | Readable,
    db: str | None = None,
    *,
    staging: str,
    parts: int = DEFAULT_PARTS,
    name: str | None = None,
    uploaded_by: str | None = None,
    import_id: str | None = None,
    dataset: str | Dataset | None = None,
    table: str | None = None,
    mode: Literal["insert", "upsert"] | None = None,
    key: tuple[str, ...] | None = None,
    types: Mapping[str, str] | None = None,
    infer: bool = True,
    datasets_file: str | Path | None = None,
    dialect: Dialect | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    renames: Mapping[str, str] | None = None,
    alter: bool = False,
    limit: int | None = None,
    max_rejects: int | None = None,
    enqueue: Enqueue | None = None,
) -> Summary:
    """Stage ``source`` in ``staging`` (a ``file:///`` directory or ``s3://bucket/prefix``)
    and queue its import for the workers (``antioom worker``); returns the queued record.

    The workers split an input they can (inserts without a key) into ``parts`` parts of 16 to
    256 MiB (fewer for a small input, more for a big one) imported side by side; the record
    in ``db`` follows the import. ``enqueue`` defaults to the Celery app's
    (``ANTIOOM_BROKER_URL``).
    """
    from antioom.workers.jobs import check_new, job_for, submit

    import_id = import_id or uuid.uuid4().hex
    target, options = _target_and_options(
        import_id,
        dataset=dataset,
        table=table,
        mode=mode,
        key=key,
        types=types,
        infer=infer,
        datasets_file=datasets_file,
        dialect=dialect,
        batch_size=batch_size,
        batch_bytes=batch_bytes,
        renames=renames,
        alter=alter,
        reset=None,
        limit=limit,
        max_rejects=max_rejects,
    )
    if parts < 1:
        raise ConfigError("the number of parts must be at least 1")
    if enqueue is None:
        from antioom.workers.tasks import enqueue as enqueue_on_broker

        enqueue = enqueue_on_broker
    label = name or (str(source) if isinstance(source, str | Path) else None)
    job = job_for(
        import_id,
        db or default_db(),
        staging,
        target,
        options,
        parts=parts,
        source=label,
        uploaded_by=uploaded_by,
    )
    with ExitStack() as stack:
        store = open_store(job.db)
        stack.callback(store.close)
        check_new(store, job.import_id)  # before the whole file is staged
        reader = open_path(source) if isinstance(source, str | Path) else CountingReader(source)
        stack.callback(reader.close)
        return submit(reader, job, enqueue)


def _one_writer(db: str) -> bool:
    return db.startswith("sqlite")


def _keyed(target: Target) -> bool:
    """Whether the import writes by key (an upsert or a keyed insert)."""
    return bool(target.key or (target.dataset is not None and target.dataset.key))


def _why_one_pass(
    source: str | Path | Readable, db: str, target: Target, options: Options
) -> str | None:
    """Why ``source`` cannot be imported in parts side by side, or None if it may be."""
    if not isinstance(source, str | Path) or str(source) == "-" or not os.path.isfile(source):
        return "only a regular file can be read in parts"
    if _one_writer(db):
        return "SQLite takes one writer at a time"
    if not splittable(target, options):
        return "--limit, --max-rejects, --drop and --truncate need one pass"
    with open(source, "rb") as head:
        magic = head.read(4)
    if magic.startswith((GZIP_MAGIC, ZSTD_MAGIC)):
        return "a compressed file is read from its start"
    return None


def _target_and_options(
    import_id: str,
    *,
    dataset: str | Dataset | None,
    table: str | None,
    mode: Literal["insert", "upsert"] | None,
    key: tuple[str, ...] | None,
    types: Mapping[str, str] | None,
    infer: bool,
    datasets_file: str | Path | None,
    dialect: Dialect | None,
    batch_size: int,
    batch_bytes: int,
    renames: Mapping[str, str] | None,
    alter: bool,
    reset: Literal["drop", "truncate"] | None,
    limit: int | None,
    max_rejects: int | None,
) -> tuple[Target, Options]:
    """The engine's Target and Options for an import's keyword arguments, checked."""
    if dataset is None and table is None:
        raise ConfigError("choose a dataset or a table to import into")
    if batch_size < 1 or batch_bytes < 1:
        raise ConfigError("the batch size must be at least 1")
    if isinstance(dataset, str):
        dataset = resolve_dataset(dataset, datasets_file)
    if min(limit or 0, max_rejects or 0) < 0:
        raise ConfigError("--limit and --max-rejects cannot be negative")
    target = Target(
        dataset=dataset,
        table=table,
        mode=mode,
        key=key,
        types=types,
        infer=infer,
        renames=renames,
        alter=alter,
        reset=reset,
    )
    options = Options(
        dialect=dialect or Dialect(),
        batch_size=batch_size,
        batch_bytes=batch_bytes,
        import_id=import_id,
        limit=limit,
        max_rejects=max_rejects,
    )
    return target, options


def _save_quietly(store: Store, summary: Summary) -> None:
    """Save the final record; if the database is gone, the record stays ``running`` until a
    later run or server finds its owner gone and marks it ``interrupted`` from the ledger."""
    with suppress(DatabaseUnavailable):
        store.save(summary)


def _file_size(path: str | None) -> int | None:
    return os.path.getsize(path) if path and path != "-" and os.path.isfile(path) else None
