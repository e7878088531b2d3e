"""Queued imports: a staged input imported by workers, in parts, through the one pipeline.

    submit:  bytes → staging (``Staging.put``; record boundaries found on the way,
             :class:`~antioom.engine.parts.Scanning`) → record ``queued`` → enqueue ``plan``
    plan:    read the head, cut the parts at those boundaries (or scan for them:
             :func:`antioom.engine.parts.plan`), create the table, enqueue one ``part`` job
             per part
    part:    staged bytes ``start..end`` → :func:`~antioom.engine.pipeline.run_import` →
             close the part in the ledger; the worker that closes the last part saves the
             final record and deletes the staged object

The broker may deliver a job twice (a worker killed before it acknowledged); correctness
comes from the batch ledger: a part run again resumes after its committed batches, and a
closed part is not run again. Nothing here imports Celery: :mod:`antioom.workers.tasks`
binds these functions to it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from antioom.engine.datasets import Dataset
from antioom.engine.parts import PART_SEQS, Part, Scan, Scanning, plan
from antioom.engine.pipeline import Options, Target, resolve_dataset, run_import, splittable
from antioom.engine.progress import ProgressEvent, Summary, utc_now
from antioom.engine.records import Dialect
from antioom.engine.rejects import Reject
from antioom.engine.source import CountingReader, Readable, decompressed
from antioom.errors import (
    AntioomError,
    DatabaseLost,
    DatabaseUnavailable,
    ImportCancelled,
    ImportConflict,
    StagingUnavailable,
)
from antioom.history import QUEUE_OWNER, Heartbeats, Origin, Store, open_store
from antioom.sinks import open_sink
from antioom.staging import open_staging

DEFAULT_PARTS = 4
# A big input is cut finer than asked: a part stays well within the broker's delivery timeout
# (RabbitMQ's consumer_timeout: 30 min) even into a slow database, and a retry repeats little.
MAX_PART_BYTES = 256 << 20
PROGRESS_S = 1.0  # how often a running part saves the import's counts
REJECTS_KEPT = 1000  # rejects stored per import (shared out between its parts)
FINAL = ("completed", "failed", "aborted")
TRANSIENT = (DatabaseUnavailable, DatabaseLost, StagingUnavailable)  # the job is tried again

log = logging.getLogger("antioom.workers")


@dataclass(frozen=True)
class Job:
    """One queued import: where the staged bytes are, where they go, and how to read them."""

    import_id: str
    db: str
    staging: str
    key: str  # the staged object
    size: int
    target: dict[str, Any]  # Target's fields (a dataset as a dict)
    options: dict[str, Any]  # Options' fields but the id (the dialect as a dict)
    parts: int = DEFAULT_PARTS
    source: str | None = None  # the file name, for the record
    uploaded_by: str | None = None
    rejects_kept: int = REJECTS_KEPT
    scan: dict[str, Any] | None = None  # record boundaries found while staging (a Scan)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**data)

    def decoded(self) -> tuple[Target, Options]:
        target = dict(self.target)
        if target.get("dataset") is not None:
            target["dataset"] = Dataset.model_validate(target["dataset"])
        if target.get("key") is not None:
            target["key"] = tuple(target["key"])
        options = dict(self.options)
        options["dialect"] = dialect_from(options.get("dialect") or {})
        return Target(**target), Options(**options, import_id=self.import_id)


def job_for(
    import_id: str | None,
    db: str,
    staging: str,
    target: Target,
    options: Options,
    **fields: Any,
) -> Job:
    """A job for ``target`` and ``options``, its staged object named after the import id."""
    import_id = import_id or uuid.uuid4().hex
    target_fields = asdict(target) | {"dataset": None}
    if target.dataset is not None:
        target_fields["dataset"] = target.dataset.model_dump(mode="json")
    option_fields = asdict(options)
    option_fields.pop("import_id")
    option_fields.pop("part")
    return Job(
        import_id=import_id,
        db=db,
        staging=staging,
        key=f"{import_id}.csv",
        size=0,
        target=target_fields,
        options=option_fields,
        **fields,
    )


def dialect_from(data: dict[str, Any]) -> Dialect:
    """A Dialect from its fields as JSON gives them back (tuples as lists)."""
    data = dict(data)
    for name in ("columns", "null_values"):
        if data.get(name) is not None:
            data[name] = tuple(data[name])
    return Dialect(**data)


def part_from(data: dict[str, Any]) -> Part:
    return Part(**data)


Enqueue = Callable[[str, dict[str, Any]], None]  # (job kind, arguments)


def submit(source: Readable, job: Job, enqueue: Enqueue) -> Summary:
    """Stage ``source`` and queue its import; returns the queued record's summary."""
    return queue(stage(source, job), enqueue)


def stage(source: Readable, job: Job) -> Job:
    """Put ``source`` (streamed, never held whole) in the job's staging storage,
    decompressed: parts are byte ranges of the CSV itself. Returns the job with its size."""
    reader = source if isinstance(source, CountingReader) else CountingReader(source)
    staged = decompressed(reader)
    target, options = job.decoded()
    scanning = None
    if job.parts > 1 and splittable(target, options):  # plan while the bytes go by
        staged = scanning = Scanning(staged, options.dialect)
    size = open_staging(job.staging).put(job.key, staged)
    scan = scanning.scan() if scanning is not None else None
    return replace(job, size=size, scan=asdict(scan) if scan is not None else None)


def queue(job: Job, enqueue: Enqueue) -> Summary:
    """Record the staged import as queued and queue its plan; returns the queued summary.
    If the broker refuses it, the import ends failed and its staged object goes."""
    store = open_store(job.db)
    try:
        check_new(store, job.import_id, staging_here=True)
        summary = _queued(job)
        origin = Origin(
            QUEUE_OWNER, source=job.source, source_bytes=job.size, uploaded_by=job.uploaded_by
        )
        store.save(summary, origin, rejects_kept=0)
        try:
            enqueue("plan", {"job": job.to_dict()})
        except Exception as exc:
            summary.status, summary.error = "failed", f"could not queue the import: {exc}"
            summary.finished_at = utc_now()
            store.save(summary)
            _delete_staged(job)
            raise
        return summary
    finally:
        store.close()


def check_new(store: Store, import_id: str, *, staging_here: bool = False) -> None:
    """Refuse an import id that was used before: a queued import's ledger is cut in parts of
    its own, so an id is never queued twice nor resumed in another shape. ``staging_here``:
    the server's own record of the upload it is staging is no earlier use."""
    record = store.get(import_id)
    if record is None or (
        staging_here and record.get("owner") != QUEUE_OWNER and record["status"] == "running"
    ):
        return
    raise ImportConflict(
        f"import {import_id} exists ({record['status']}): choose another import id"
    )


def _queued(job: Job) -> Summary:
    target = job.target
    dataset = target.get("dataset")
    label = dataset["name"] if dataset else (target.get("table") or "")
    table = target.get("table") or (dataset["table"] if dataset else "")
    # ``bytes``: the input bytes taken so far, all of them (staged); running parts count again
    return Summary(job.import_id, "queued", label, table, bytes=job.size, started_at=utc_now())


def run_plan(job: Job, enqueue: Enqueue) -> None:
    """Split the staged input and queue its parts (one part unless it can run in parallel)."""
    with ExitStack() as stack:
        store = open_store(job.db)
        stack.callback(store.close)
        record = store.get(job.import_id)
        if record is not None and record["status"] in FINAL:  # cancelled while queued
            _delete_staged(job)
            return
        target, options = job.decoded()
        staging = open_staging(job.staging)

        def open_range(start: int, end: int | None) -> Readable:
            return staging.open_range(job.key, start, end)

        wanted = parts_for(job) if splittable(target, options) else 1
        try:
            scanned = Scan.from_dict(job.scan) if job.scan else None
            found = plan(open_range, job.size, options.dialect, wanted, scanned=scanned)
            dataset = None
            if len(found.parts) > 1:
                first = found.parts[0]
                source = open_range(first.start, first.end)
                dataset = resolve_dataset(source, target, found.dialect)
                with open_sink(job.db) as sink:
                    sink.prepare(dataset, alter=target.alter)
        except TRANSIENT:
            raise
        except AntioomError as exc:
            fail(job, str(exc))
            return
        summary = _queued(job)
        summary.status, summary.bytes = "running", 0
        if record is not None:  # the import started when it was queued
            summary.started_at = record.get("started_at") or summary.started_at
        summary.dialect, summary.notes = found.report, found.notes
        if found.why_one_part and wanted > 1:
            summary.notes = [*summary.notes, f"imported in one part: {found.why_one_part}"]
        if not store.save_if_active(summary):  # cancelled (DELETE) while it was planned
            _delete_staged(job)
            return
        job = replace(job, scan=None)  # the parts do not need it
        for part in found.parts:
            enqueue(
                "part",
                {
                    "job": job.to_dict(),
                    "part": asdict(part),
                    "dialect": asdict(found.dialect),
                    "dataset": dataset.model_dump(mode="json") if dataset else None,
                    "records": found.records,
                },
            )


def run_part(
    job: Job, part: Part, dialect: Dialect, dataset: Dataset | None, records: int | None = None
) -> Summary | None:
    """Import one part (of an input of ``records`` records, if the plan counted them); returns
    the import's final summary if this finished the import."""
    with ExitStack() as stack:
        store = open_store(job.db)
        stack.callback(store.close)
        record = store.get(job.import_id)
        if record is not None and record["status"] in FINAL:
            _delete_staged(job)  # if it was cancelled before this part ran
            return None
        closing = part.seqs.stop - 1
        if part.count > 1 and store.closed_parts(job.import_id, [closing]):
            return finish(job, store, part.count)
        target, options = job.decoded()
        if part.count > 1:
            assert dataset is not None
            target = Target(dataset=dataset, alter=target.alter)
            options = replace(options, dialect=dialect, part=part)
        sink = stack.enter_context(open_sink(job.db))
        earlier = sink.committed(job.import_id, part.seqs)
        resumed_at = earlier.end_record if earlier.batches else part.first_record - 1
        last = part.first_record + part.records - 1 if part.count > 1 else None
        kept = store.drop_rejects_after(job.import_id, resumed_at, upto=last)
        rejects = _RejectKeeper(store, job.import_id, job.rejects_kept // part.count, kept)
        heartbeats = Heartbeats(lambda: store)
        heartbeats.add(job.import_id)
        stack.callback(heartbeats.stop)
        staged = open_staging(job.staging).open_range(job.key, part.start, part.end)
        reader = CountingReader(staged, close_raw=True)
        stack.callback(reader.close)
        progress = _ProgressSaver(store, job, part, records)
        try:
            summary = run_import(
                reader,
                sink,
                target,
                options,
                on_progress=progress,
                on_reject=rejects.add,
                flush_rejects=rejects.flush,
                cancel=progress.cancelled,
            )
        except TRANSIENT:
            raise  # the job is tried again, and resumes
        except ImportCancelled:
            _stopped(job, store)
            return None
        except ImportConflict as exc:  # another run of this part (a redelivered copy) writes it
            log.warning("part %d of import %s: %s", part.index + 1, job.import_id, exc)
            return None
        except AntioomError as exc:
            ended: Summary | None = getattr(exc, "summary", None)
            if part.count == 1 and ended is not None:
                ended.bytes = job.size
                store.save_if_active(ended)
                _delete_staged(job)
            else:
                fail(job, str(exc))
            return None
        if part.count == 1:
            summary.bytes = job.size
            summary.status = "completed"
            _delete_staged(job)
            if not store.save_if_active(summary, rejects_kept=rejects.kept):
                _stopped(job, store)  # cancelled at the last moment: it stays so, counted
                return None
            return summary
        if summary.rows != part.records:
            fail(
                job,
                f"internal error: part {part.index + 1} of {part.count} read {summary.rows} "
                f"records where the scan counted {part.records}",
            )
            return None
        done = sink.committed(job.import_id, part.seqs)
        tail = done.end_record + 1 if done.batches else part.first_record
        store.close_part(job.import_id, closing, tail, part.first_record + part.records - 1)
        return finish(job, store, part.count)


def finish(job: Job, store: Store, parts: int) -> Summary | None:
    """Save the final record once every part is closed (any worker may be the last one:
    saving the same totals twice is harmless)."""
    closing = [(index + 1) * PART_SEQS - 1 for index in range(parts)]
    if store.closed_parts(job.import_id, closing) < parts:
        return None
    record = store.get(job.import_id)
    if record is not None and record["status"] in ("failed", "aborted"):  # another part's doing
        return None
    summary = _totals(job, store, "completed")
    summary.batches -= parts  # the closing rows are no batches
    kept = sum(count for _, count in store.reject_reasons(job.import_id))
    _delete_staged(job)  # first: a worker dying before the save finds every part closed
    if not store.save_if_active(summary, rejects_kept=kept):
        _stopped(job, store)  # cancelled at the last moment: it stays so, counted
        return None
    return summary


def fail(job: Job, reason: str) -> None:
    """End the import ``failed`` with ``reason`` and the counts its ledger proves; its staged
    object goes (a queued import is not resumed: it is submitted again)."""
    store = open_store(job.db)
    try:
        summary = _totals(job, store, "failed")
        summary.error = reason
        store.save_if_active(summary)  # not over a cancel, nor another part's failure
    finally:
        store.close()
    _delete_staged(job)


def cancel(db: str, import_id: str, reason: str) -> bool:
    """End a queued import ``aborted`` (DELETE); returns False if it had already ended. Its
    running parts stop at their next batch (their progress saver reads the record), and
    each saves the counts the ledger then proves."""
    store = open_store(db)
    try:
        record = store.get(import_id)
        if record is None:
            return False
        committed = store.committed(import_id)
        summary = Summary(import_id, "aborted", record["dataset"], record["table"])
        summary.processed, summary.failed = committed.committed_rows, committed.rejected
        summary.rows, summary.batches = committed.records, committed.batches
        summary.bytes = record["bytes"] or 0
        summary.started_at, summary.finished_at = record["started_at"], utc_now()
        summary.error = reason
        return store.save_if_active(summary)
    finally:
        store.close()


def _stopped(job: Job, store: Store) -> None:
    """A part stopped because its import ended (a DELETE, another part's failure): the final
    record keeps its status and reason, and gets the counts the ledger proves now."""
    record = store.get(job.import_id) or {}
    status = record.get("status")
    if status in ("aborted", "failed"):
        summary = _totals(job, store, status)
        # Parts stop one after the other: the counts of the last one to stop are the ledger's.
        if summary.rows >= (record.get("rows") or 0):
            summary.error = record.get("error")
            summary.finished_at = record.get("finished_at") or summary.finished_at
            store.save(summary)
    _delete_staged(job)


def _totals(job: Job, store: Store, status: Any) -> Summary:
    committed = store.committed(job.import_id)
    record = store.get(job.import_id) or {}
    summary = _queued(job)
    summary.status = status
    summary.started_at = record.get("started_at") or summary.started_at
    summary.processed = committed.committed_rows
    summary.failed = committed.rejected
    summary.rows = committed.records
    summary.batches = committed.batches
    summary.bytes = job.size if status in FINAL else 0  # a running part estimates it
    summary.finished_at = utc_now() if status in FINAL else None
    started = datetime.fromisoformat(summary.started_at)
    summary.duration_s = round((datetime.now(UTC) - started).total_seconds(), 3)
    if summary.duration_s > 0:
        summary.rows_per_s = round(summary.rows / summary.duration_s, 1)
    return summary


def parts_for(job: Job) -> int:
    """How many parts to cut the job's input in: as many as asked, more for a big input."""
    return max(job.parts, -(-job.size // MAX_PART_BYTES))


def _delete_staged(job: Job) -> None:
    with suppress(Exception):  # a staged object left behind wastes space, nothing else
        open_staging(job.staging).delete(job.key)


@dataclass
class _RejectKeeper:
    """Keeps up to ``room`` of a part's rejects in the store, flushed before each batch."""

    store: Store
    import_id: str
    room: int
    kept: int
    pending: list[Reject] = field(default_factory=list)
    added: int = 0

    def add(self, reject: Reject) -> None:
        if self.added < self.room:
            self.pending.append(reject)
            self.added += 1

    def flush(self) -> None:
        if self.pending:
            self.store.add_rejects(self.import_id, self.pending)
            self.kept += len(self.pending)
            self.pending.clear()


class _ProgressSaver:
    """Saves the import's running counts (from the ledger: all parts') every PROGRESS_S."""

    def __init__(self, store: Store, job: Job, part: Part, records: int | None) -> None:
        self._store = store
        self._job = job
        self._part = part
        self._records = records
        self.cancelled = threading.Event()  # set once the record is final (DELETE, a failure)
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_S or event.status != "running":
            return
        self._last = now
        with self._lock, suppress(DatabaseUnavailable):
            summary = _totals(self._job, self._store, "running")
            if self._part.count == 1:
                summary.processed, summary.failed = event.processed, event.failed
                summary.rows, summary.batches = event.rows, event.batches
                summary.bytes = event.bytes
            elif self._records:  # the parts' bytes read, estimated from their records
                summary.bytes = min(self._job.size * summary.rows // self._records, self._job.size)
            if not self._store.save_if_active(summary):
                self.cancelled.set()
