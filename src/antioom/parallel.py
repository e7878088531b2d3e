"""One local file imported in parts side by side: ``antioom import big.csv --workers N``.

The same parts as a queued import (:mod:`antioom.engine.parts`), run by threads of this
process, each part a :func:`~antioom.engine.pipeline.run_import` over its byte range with a
connection of its own: Arrow's parser and the database drivers release the GIL, so the parts
use the cores that one pipeline leaves idle. Batches carry the part's sequence numbers and
each finished part closes itself in the ledger, so an interrupted import resumes part by part
(with the same ``--workers``: the plan is the same for the same file and count).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from antioom.engine.parts import PART_SEQS, Part, Plan, plan
from antioom.engine.pipeline import (
    Options,
    Target,
    join_through_interrupts,
    resolve_dataset,
    run_import,
)
from antioom.engine.progress import ProgressEvent, Summary, rss_mb, utc_now
from antioom.engine.rejects import Reject
from antioom.engine.source import CountingReader, Readable
from antioom.errors import AntioomError, ImportCancelled, ImportConflict, InputError
from antioom.history import Store
from antioom.sinks import open_sink
from antioom.sinks.base import Sink

MAX_SAMPLE_REJECTS = 20


class FileRange:
    """Bytes ``start..end`` of a file, read in bounded chunks."""

    def __init__(self, path: str, start: int, end: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._file.seek(start)
        self._left = end - start

    def read(self, size: int = -1, /) -> bytes:
        if self._left <= 0:
            return b""
        data = self._file.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()


def plan_file(path: str, options: Options, workers: int) -> Plan:
    """The parts of the file at ``path`` (one, with the reason, if it cannot be split)."""
    size = os.path.getsize(path)

    def open_range(start: int, end: int | None) -> Readable:
        return FileRange(path, start, size if end is None else end)

    return plan(open_range, size, options.dialect, workers)


@dataclass
class _Progress:
    """The parts' latest events, summed into the import's."""

    import_id: str
    on_progress: Callable[[ProgressEvent], None] | None
    started: float = field(default_factory=time.monotonic)
    latest: dict[int, ProgressEvent] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, index: int) -> Callable[[ProgressEvent], None]:
        def update(event: ProgressEvent) -> None:
            with self.lock:
                self.latest[index] = event
                events = list(self.latest.values())
                elapsed = time.monotonic() - self.started
                rows = sum(e.rows for e in events)
                combined = ProgressEvent(
                    self.import_id,
                    "running",
                    processed=sum(e.processed for e in events),
                    failed=sum(e.failed for e in events),
                    rows=rows,
                    bytes=sum(e.bytes for e in events),
                    elapsed_s=round(elapsed, 3),
                    rows_per_s=round(rows / elapsed, 1) if elapsed > 0 else 0.0,
                    rss_mb=rss_mb(),
                    batches=sum(e.batches for e in events),
                )
                if self.on_progress is not None:
                    self.on_progress(combined)

        return update


def import_in_parts(
    path: str,
    db: str,
    found: Plan,
    target: Target,
    options: Options,
    store: Store | None,
    *,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    on_reject: Callable[[Reject], None] | None = None,
    flush_rejects: Callable[[], None] | None = None,
    cancel: threading.Event | None = None,
) -> Summary:
    """Import the parts of ``found`` (more than one) side by side; the summary covers the
    whole file (and the earlier runs of a resumed import). The first part to fail stops the
    others at their next batch, and its error is raised with the import's summary."""
    began, started_at = time.monotonic(), utc_now()
    import_id = options.import_id
    assert import_id is not None  # import_csv names every import
    first = found.parts[0]
    source = FileRange(path, first.start, first.end)
    try:
        dataset = resolve_dataset(source, target, found.dialect)
    finally:
        source.close()
    with open_sink(db) as sink:
        sink.prepare(dataset, alter=target.alter)
        _check_same_parts(sink, store, import_id, found.parts)
    stop = threading.Event()  # the parts' own: one part failing stops the others, not the caller
    progress = _Progress(import_id, on_progress)
    lock = threading.Lock()
    errors: list[BaseException] = []
    results: list[Summary] = []

    def locked(callback: Callable[..., None] | None) -> Callable[..., None] | None:
        if callback is None:
            return None

        def call(*args: object) -> None:
            with lock:
                callback(*args)

        return call

    def run(part: Part) -> None:
        closing = part.seqs.stop - 1
        try:
            if store is not None and store.closed_parts(import_id, [closing]):
                return  # done by an earlier run of this import
            with open_sink(db) as part_sink:
                summary = run_import(
                    CountingReader(FileRange(path, part.start, part.end), close_raw=True),
                    part_sink,
                    Target(dataset=dataset, alter=target.alter),
                    replace(options, dialect=found.dialect, part=part),
                    on_progress=progress.of(part.index),
                    on_reject=locked(on_reject),
                    flush_rejects=locked(flush_rejects),
                    cancel=stop,
                )
                if summary.rows != part.records:
                    raise InputError(
                        f"part {part.index + 1} of {part.count} read {summary.rows} records "
                        f"where the scan counted {part.records}: the file changed while read?"
                    )
                done = part_sink.committed(import_id, part.seqs)
            if store is not None:
                tail = done.end_record + 1 if done.batches else part.first_record
                store.close_part(import_id, closing, tail, part.first_record + part.records - 1)
            with lock:
                results.append(summary)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=run, args=(part,), name=f"antioom-part-{part.index}")
        for part in found.parts
    ]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            if cancel is not None and cancel.is_set():
                stop.set()
            next(t for t in threads if t.is_alive()).join(0.2)
    except KeyboardInterrupt:  # Ctrl-C: the parts stop at their next batch
        stop.set()
        join_through_interrupts(threads)
        raise
    summary = _whole(found, dataset.name, dataset.table, results, store, db, import_id)
    summary.started_at, summary.bytes = started_at, os.path.getsize(path)
    summary.duration_s = round(time.monotonic() - began, 3)
    if summary.duration_s > 0:
        summary.rows_per_s = round(summary.rows / summary.duration_s, 1)
    failure = next((e for e in errors if not isinstance(e, ImportCancelled)), None)
    if failure is None and errors:
        failure = errors[0]
    if failure is None and summary.rows != found.records:  # never completed over a lost record
        failure = InputError(
            f"the parts account for {summary.rows} records where the file has "
            f"{found.records}: run it again with --workers 1"
        )
    if failure is not None:
        summary.status = "aborted" if isinstance(failure, ImportCancelled) else "failed"
        summary.error = str(failure)
        if isinstance(failure, AntioomError):
            failure.summary = summary  # type: ignore[attr-defined]
        raise failure
    summary.status = "completed"
    return summary


def _check_same_parts(sink: Sink, store: Store | None, import_id: str, parts: list[Part]) -> None:
    """Before any part runs: what an earlier run committed must lie in these parts, each
    part's batches spanning from its first record, and a part closed before must end where
    this one ends (parts cut otherwise would write, or skip, records of another part's)."""
    if sink.committed(import_id).next_seq > len(parts) * PART_SEQS:
        raise _other_parts(import_id)
    for part in parts:
        earlier = sink.committed(import_id, part.seqs)
        last = part.first_record + part.records - 1
        closed = store is not None and store.closed_parts(import_id, [part.seqs.stop - 1])
        if earlier.batches and (
            earlier.end_record > last
            or earlier.records != earlier.end_record - part.first_record + 1
            or (closed and earlier.end_record != last)
        ):
            raise _other_parts(import_id)


def _other_parts(import_id: str) -> ImportConflict:
    return ImportConflict(
        f"import {import_id} was cut in other parts before: it resumes only in the same parts "
        "(the same --workers)"
    )


def _whole(
    found: Plan,
    dataset: str,
    table: str,
    results: list[Summary],
    store: Store | None,
    db: str,
    import_id: str,
) -> Summary:
    """The import's summary: counts from the ledger (all parts, all runs; the parts' closing
    rows are no batches), what this run's parts reported (rejects, reasons) merged."""
    with open_sink(db) as sink:
        committed = sink.committed(import_id)
    closing = [part.seqs.stop - 1 for part in found.parts]
    closed = store.closed_parts(import_id, closing) if store is not None else 0
    summary = Summary(import_id, "running", dataset, table)
    summary.processed = committed.committed_rows
    summary.failed = committed.rejected
    summary.rows = committed.records
    summary.batches = committed.batches - closed
    if store is None:  # no closing rows: a part's rejected tail is in its summary only
        summary.failed = sum(result.failed for result in results)
        summary.rows = sum(result.rows for result in results)
    summary.peak_rss_mb = max([rss_mb(), *(result.peak_rss_mb for result in results)])
    summary.finished_at = utc_now()
    summary.dialect, summary.notes = found.report, list(found.notes)
    rejects = sorted((r for result in results for r in result.rejects), key=lambda r: r.record)
    summary.rejects = rejects[:MAX_SAMPLE_REJECTS]
    for result in results:
        for reason, count in result.rejects_by_reason.items():
            summary.rejects_by_reason[reason] = summary.rejects_by_reason.get(reason, 0) + count
    earlier = [result.resumed_from for result in results if result.resumed_from]
    if earlier:
        summary.resumed_from = {key: sum(entry[key] for entry in earlier) for key in earlier[0]}
    summary.notes.append(f"imported in {len(found.parts)} parts side by side")
    return summary
