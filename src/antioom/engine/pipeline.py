"""The one import pipeline, shared by the CLI, the server and the Python API.

Two threads and one bounded queue::

    parser thread:  bytes → CsvRecords → Validator → rebatch → sink.encode ─┐
                                                          queue (maxsize 2) │
    caller thread:  sink.write (one transaction per batch) → progress ◀─────┘

Arrow's parser and the database driver both release the GIL, so parsing the next batch
overlaps writing this one. An upsert or keyed insert may instead be written by several
connections, one writer thread and one queue each, the parser sending every key's rows to
the same writer (:mod:`antioom.engine.partition`).

A queue holds at most ``QUEUE_BATCHES`` batches: when the database is slow, the parser blocks
on ``put``, stops reading, and the source (a file, or a network connection through
:class:`~antioom.engine.source.ByteChannel`) is not read any further.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import pyarrow as pa

from antioom.engine.batching import Batch, Batcher, rebatch
from antioom.engine.datasets import Dataset
from antioom.engine.partition import (
    MAX_PARTITIONS,
    PARTITIONED_SEQS,
    Spans,
    after_record,
    all_partition_seqs,
    partition_seqs,
    row_records,
    split,
    why_not_partitioned,
)
from antioom.engine.parts import PART_SEQS, Part
from antioom.engine.progress import Meter, ProgressEvent, Summary
from antioom.engine.records import Block, CsvRecords, Dialect
from antioom.engine.rejects import Reject
from antioom.engine.sniff import likely_delimiter
from antioom.engine.source import CountingReader, Readable, decompressed
from antioom.engine.validate import Validated, Validator, infer_dataset
from antioom.errors import (
    AntioomError,
    ConfigError,
    DatabaseLost,
    ImportCancelled,
    ImportConflict,
    InputError,
    TooManyRejects,
)
from antioom.sinks.base import ALL_SEQS, Committed, Sink

QUEUE_BATCHES = 2
DEFAULT_BATCH_SIZE = 20_000
DEFAULT_BATCH_BYTES = 8 << 20


@dataclass(frozen=True)
class Target:
    """What to import into: a declared dataset, or a table whose columns are inferred."""

    dataset: Dataset | None = None
    table: str | None = None
    mode: Literal["insert", "upsert"] | None = None
    key: tuple[str, ...] | None = None
    types: Mapping[str, str] | None = None  # table mode: forced column types
    infer: bool = True  # table mode: False makes every column text
    renames: Mapping[str, str] | None = None  # table mode: header (or column) name → column
    alter: bool = False  # add the columns an existing table lacks
    reset: Literal["drop", "truncate"] | None = None  # empty or drop the table first


@dataclass(frozen=True)
class Options:
    dialect: Dialect = field(default_factory=Dialect)
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_bytes: int = DEFAULT_BATCH_BYTES
    import_id: str | None = None
    limit: int | None = None  # import the first N records only
    max_rejects: int | None = None  # fail (TooManyRejects) once more rows are rejected
    part: Part | None = None  # the source is this part of a split input (engine.parts)
    writers: int = 1  # key partitions written side by side (engine.partition), if possible


class _End:
    """Queue marker: the parser finished (``error`` set if it failed)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


QueueItem = Batch | list[Reject] | _End


def run_import(
    source: CountingReader,
    sink: Sink,
    target: Target,
    options: Options = Options(),
    *,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    on_reject: Callable[[Reject], None] | None = None,
    flush_rejects: Callable[[], None] | None = None,
    cancel: threading.Event | None = None,
    refused_before_commit: bool = False,
    open_writer: Callable[[], Sink] | None = None,
) -> Summary:
    """Import ``source`` into ``sink``; returns the summary or raises an AntioomError.

    A raised error carries the partial summary as ``error.summary`` (rows committed so far).
    ``flush_rejects`` is called before each batch is written and at the end, so that rejects
    handed to ``on_reject`` can be made durable before the rows after them commit.

    With ``refused_before_commit``, the rows the database refuses are handed to ``on_reject``
    and flushed before their batch commits (inside its transaction), so that a crash right
    after the commit cannot lose them; without it, just after. Only for rejects kept outside
    the target database (a file): a store in it could wait on the batch's own locks.

    An import id the sink's ledger already holds is resumed: the records its committed batches
    account for are parsed but skipped (not validated, not written, their rejects not reported
    again), and the summary counts them from the ledger (``resumed_from``).

    With ``options.part``, ``source`` holds that part's bytes only (parsed with
    ``options.dialect``, the plan's), and the summary and the resume point are the part's.

    With ``options.writers`` > 1 and ``open_writer`` (which opens another connection), an
    upsert or keyed insert is written by that many key partitions side by side, one
    connection each (:mod:`antioom.engine.partition`); otherwise by ``sink`` alone, and the
    summary's notes say why. Callbacks are then called from the writers' threads, one at a
    time.
    """
    import_id = options.import_id or uuid.uuid4().hex
    name = target.dataset.name if target.dataset else (target.table or "")
    meter = Meter(Summary(import_id, "running", name, name))
    cancel = cancel or threading.Event()
    stop = threading.Event()
    records: CsvRecords | None = None
    writers: list[Sink] = [sink]
    dialect = options.dialect
    if target.dataset is not None and dialect.header is None:
        dialect = replace(dialect, header=True)  # a dataset's columns are found by name
    try:
        part = options.part
        first_record = part.first_record if part is not None else 1
        records = CsvRecords(decompressed(source), dialect, first_record=first_record)
        meter.summary.dialect = records.report
        meter.summary.notes = records.notes
        if records.empty:
            meter.summary.bytes = source.bytes_read
            records.close()
            summary = meter.finish("completed")
            if on_progress is not None:
                on_progress(meter.event())
            return summary
        blocks = records.blocks(_included(records, target))
        dataset, blocks = _resolve(target, records, blocks)
        meter.summary.dataset = dataset.name
        meter.summary.table = dataset.table
        validator = Validator(dataset, _included(records, target, dataset))
        partitions = 1  # for --drop: decided below, once the table is made anew
        if target.reset != "drop":  # prepare first: it also brings an older ledger up to date
            sink.prepare(dataset, alter=target.alter)
            partitions = _partitions(options, sink, dataset, open_writer, meter.summary.notes)
        if partitions > 1:
            earlier = sink.committed(import_id, all_partition_seqs(partitions))
            if sink.committed(import_id).batches != earlier.batches:
                raise ImportConflict(
                    f"import {import_id} was written otherwise before (one writer, parts, or "
                    "another --workers): it resumes only the same way"
                )
            resumed = [
                sink.committed(import_id, partition_seqs(partitions, index))
                for index in range(partitions)
            ]
        else:
            earlier = sink.committed(import_id, part.seqs if part is not None else ALL_SEQS)
            resumed = [earlier]
        if part is None and partitions == 1 and earlier.next_seq > PARTITIONED_SEQS:
            raise ImportConflict(
                f"import {import_id} was written by several connections, keys partitioned: "
                "it resumes only the same way (the same --workers)"
            )
        if part is None and partitions == 1 and earlier.next_seq > PART_SEQS:
            raise ImportConflict(
                f"import {import_id} was imported in parts: it resumes only in the same parts "
                "(the same --workers, or by the workers it was queued for)"
            )
        if part is not None and part.count > 1 and earlier.batches:
            # A part resumes what it committed itself: its spans run from its first record.
            last = part.first_record + part.records - 1
            if earlier.end_record > last or earlier.records != (
                earlier.end_record - part.first_record + 1
            ):
                raise ImportConflict(
                    f"import {import_id} was cut in other parts before: it resumes only in "
                    "the same parts (the same --workers)"
                )
        first_seq = earlier.next_seq if earlier.batches else (part.seqs.start if part else 0)
        if target.reset is not None:
            if earlier.batches:
                raise ConfigError(f"cannot {target.reset} the table when resuming {import_id}")
            sink.clear(dataset.table, drop=target.reset == "drop")
            if target.reset == "drop":  # a table of another shape is gone: create this one
                sink.prepare(dataset, alter=target.alter)
                partitions = _partitions(options, sink, dataset, open_writer, meter.summary.notes)
                resumed = [Committed() for _ in range(partitions)]
        if earlier.batches:
            _resume(meter.summary, earlier)
            resume_point = min(c.end_record if c.batches else first_record - 1 for c in resumed)
            blocks = _after(blocks, resume_point)
        if options.limit is not None:
            blocks = _upto(blocks, options.limit)
        while len(writers) < partitions:
            assert open_writer is not None
            writers.append(open_writer())
            writers[-1].prepare(dataset)
    except BaseException as exc:
        if isinstance(exc, AntioomError):
            early: Literal["failed", "aborted"] = (
                "aborted" if isinstance(exc, ImportCancelled) else "failed"
            )
            exc.summary = meter.finish(early, str(exc))  # type: ignore[attr-defined]
        if records is not None:
            records.close()
        _close_extra(writers)
        raise
    # Several writers share the queue budget (one batch each at least): as many batches wait
    # for the database as with one writer, where the writers are few.
    queues: list[queue.Queue[QueueItem]] = [
        queue.Queue(maxsize=max(1, QUEUE_BATCHES // partitions)) for _ in range(partitions)
    ]
    items = queues[0]

    def put(item: QueueItem, into: queue.Queue[QueueItem] = items) -> None:
        while not stop.is_set():
            try:
                into.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def parse() -> None:
        try:
            for batch in rebatch(
                _validated(blocks, validator, put, stop),
                import_id,
                batch_size=options.batch_size,
                batch_bytes=options.batch_bytes,
                first_seq=first_seq,
                first_record=earlier.end_record + 1 if earlier.batches else first_record,
            ):
                batch.payload = sink.encode(batch.table)
                put(batch)
                if stop.is_set():
                    return
            put(_End())
        except BaseException as exc:  # handed to the caller's thread, which raises it
            put(_End(exc))

    def parse_partitions() -> None:
        ends = [c.end_record if c.batches else first_record - 1 for c in resumed]
        batchers = [
            Batcher(
                import_id,
                batch_size=options.batch_size,
                batch_bytes=options.batch_bytes,
                first_seq=c.next_seq if c.batches else partition_seqs(partitions, index).start,
                first_record=ends[index] + 1,
            )
            for index, c in enumerate(resumed)
        ]
        spans = [Spans(end) for end in ends]

        def send(index: int, made: Iterator[Batch]) -> None:
            for batch in made:
                spans[index].account(batch)
                batch.payload = writers[index].encode(batch.table)
                put(batch, queues[index])

        try:
            for block in blocks:
                if stop.is_set():
                    return
                validated = validator.validate(block)
                owned = split(validated, dataset.key, partitions, row_records(validated))
                for index, mine in enumerate(owned):
                    mine = after_record(mine, ends[index])
                    spans[index].block(mine)
                    if mine.rejects:
                        put(mine.rejects, queues[index])
                    send(index, batchers[index].add(mine))
            for index, batcher in enumerate(batchers):
                send(index, batcher.finish())
            for into in queues:
                put(_End(), into)
        except BaseException as exc:  # handed to the writers, the first raises it
            for into in queues:
                put(_End(exc), into)

    parser = threading.Thread(
        target=parse if partitions == 1 else parse_partitions,
        name=f"antioom-parse-{import_id[:8]}",
        daemon=True,
    )
    parser.start()
    status: Literal["completed", "failed", "aborted"] = "failed"
    consume = partial(
        _consume,
        meter=meter,
        source=source,
        on_progress=on_progress,
        early_reject=on_reject if refused_before_commit else None,
        on_reject=on_reject,
        flush_rejects=flush_rejects,
        cancel=cancel,
        max_rejects=options.max_rejects,
    )
    try:
        if partitions == 1:
            consume(items, sink)
        else:
            _consume_side_by_side(consume, queues, writers, stop)
        status = "completed"
    except ImportCancelled as exc:
        status = "aborted"
        exc.summary = meter.finish(status, str(exc))  # type: ignore[attr-defined]
        raise
    except AntioomError as exc:
        if isinstance(exc, DatabaseLost):
            exc.args = (f"{exc}; {meter.summary.processed} rows were committed before it",)
        exc.summary = meter.finish(status, str(exc))  # type: ignore[attr-defined]
        raise
    finally:
        stop.set()
        parser.join()
        records.close()
        _close_extra(writers)
        if on_progress is not None and status != "completed" and meter.summary.finished_at:
            on_progress(meter.event())
    summary = meter.finish("completed")
    if on_progress is not None:
        on_progress(meter.event())
    return summary


def _partitions(
    options: Options,
    sink: Sink,
    dataset: Dataset,
    open_writer: Callable[[], Sink] | None,
    notes: list[str],
) -> int:
    """How many key partitions write this import (1: the sink alone)."""
    if options.writers <= 1 or options.part is not None or open_writer is None:
        return 1
    why_not = why_not_partitioned(dataset) or sink.why_one_writer()
    if why_not is not None:
        notes.append(f"written by one connection: {why_not}")
        return 1
    count = min(options.writers, MAX_PARTITIONS)
    notes.append(f"written by {count} connections side by side, keys partitioned")
    return count


def _close_extra(writers: list[Sink]) -> None:
    """Close the connections opened for key partitions (the first is the caller's)."""
    for writer in writers[1:]:
        with suppress(Exception):
            writer.close()


def _consume_side_by_side(
    consume: Callable[..., None],
    queues: list[queue.Queue[QueueItem]],
    writers: list[Sink],
    stop: threading.Event,
) -> None:
    """Run one writer thread per partition; the first error stops the others (each at its
    next batch) and is raised here. Ctrl-C stops them too, after their current batch."""
    lock = threading.RLock()
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            consume(queues[index], writers[index], guard=lock, stop=stop)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=run, args=(index,), name=f"antioom-writer-{index}")
        for index in range(len(writers))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        join_through_interrupts(threads)
        raise
    if errors:
        raise next((e for e in errors if not isinstance(e, ImportCancelled)), errors[0])


def join_through_interrupts(threads: list[threading.Thread]) -> None:
    """Wait for threads told to stop (at their next batch), whatever Ctrl-C comes meanwhile:
    the record then counts what they committed."""
    for thread in threads:
        while thread.is_alive():
            with suppress(KeyboardInterrupt):
                thread.join()


def resolve_dataset(source: Readable, target: Target, dialect: Dialect) -> Dataset:
    """The dataset an import of ``source`` writes, as :func:`run_import` resolves it (for a
    table, inferred from the first block). The parts of a split input import into the one
    resolved from the first part, so that they all agree on the types."""
    reader = CountingReader(source, close_raw=True)
    records = CsvRecords(decompressed(reader), dialect)
    try:
        dataset, _ = _resolve(target, records, records.blocks(_included(records, target)))
        return dataset
    finally:
        records.close()
        reader.close()


def _consume(
    items: queue.Queue[QueueItem],
    sink: Sink,
    *,
    meter: Meter,
    source: CountingReader,
    on_progress: Callable[[ProgressEvent], None] | None,
    early_reject: Callable[[Reject], None] | None,
    on_reject: Callable[[Reject], None] | None,
    flush_rejects: Callable[[], None] | None,
    cancel: threading.Event,
    max_rejects: int | None,
    guard: AbstractContextManager[Any] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Write the batches of ``items`` with ``sink`` until the parser's end marker. Several
    writers share the meter and the callbacks under ``guard`` (a lock), and leave quietly
    once ``stop`` is set (another writer failed, or Ctrl-C)."""
    summary = meter.summary
    guard = guard if guard is not None else nullcontext()

    def check_rejects() -> None:
        if max_rejects is not None and summary.failed > max_rejects:
            raise TooManyRejects(
                f"{summary.failed} rows rejected, more than the {max_rejects} allowed "
                f"(--max-rejects); {summary.processed} rows were committed before"
            )

    if on_progress is not None:
        with guard:
            on_progress(meter.event())
    while True:
        try:
            item = items.get(timeout=0.2)
        except queue.Empty:
            item = None
        if cancel.is_set():
            raise ImportCancelled(f"import cancelled after {summary.processed} committed rows")
        if stop is not None and stop.is_set():
            return
        if item is None:
            continue
        if isinstance(item, _End):
            with guard:
                if flush_rejects is not None:
                    flush_rejects()
                if item.error is not None:
                    raise _as_user_error(item.error)
                summary.bytes = source.bytes_read
            return
        if isinstance(item, list):
            with guard:
                summary.rows += len(item)
                for reject in item:
                    meter.rejected(reject)
                    if on_reject is not None:
                        on_reject(reject)
                check_rejects()
            continue
        with guard:
            if flush_rejects is not None:
                flush_rejects()
        reported: set[int] = set()
        if early_reject is not None:
            item.before_commit = _reporter(
                item,
                reported,
                _guarded(guard, early_reject),
                _guarded(guard, flush_rejects) if flush_rejects is not None else None,
            )
        result = sink.write(item)
        with guard:
            summary.batches += 1
            summary.rows += item.rows
            if not result.duplicate:
                summary.processed += item.rows - len(result.errors)
            for error in result.errors:
                reject = Reject(
                    record=item.record_number(error.row), column=None, reason=error.reason
                )
                meter.rejected(reject)
                if on_reject is not None and error.row not in reported:
                    on_reject(reject)
            summary.bytes = source.bytes_read
            if on_progress is not None:
                on_progress(meter.event())
            check_rejects()


def _guarded(
    guard: AbstractContextManager[Any], callback: Callable[..., None]
) -> Callable[..., None]:
    def call(*args: Any) -> None:
        with guard:
            callback(*args)

    return call


def _reporter(
    batch: Batch,
    reported: set[int],
    on_reject: Callable[[Reject], None],
    flush_rejects: Callable[[], None] | None,
) -> Callable[[list[Any]], None]:
    """The batch's ``before_commit``: the rows the database refused go to ``on_reject`` and are
    flushed before the batch commits, so that a process killed right after the commit has not
    lost them (a resumed import skips the batch). Counted once the batch is committed."""

    def report(errors: list[Any]) -> None:
        for error in errors:
            if error.row not in reported:  # a transaction retried after a deadlock
                reported.add(error.row)
                record = batch.record_number(error.row)
                on_reject(Reject(record=record, column=None, reason=error.reason))
        if flush_rejects is not None:
            flush_rejects()

    return report


def _resume(summary: Summary, earlier: Committed) -> None:
    """Start the counts where the earlier runs of this import left them."""
    summary.processed = earlier.committed_rows
    summary.failed = earlier.rejected
    summary.rows = earlier.records
    summary.batches = earlier.batches
    summary.resumed_from = {
        "records": earlier.records,
        "rows": earlier.committed_rows,
        "rejected": earlier.rejected,
        "batches": earlier.batches,
    }


def _after(blocks: Iterator[Block], record: int) -> Iterator[Block]:
    """``blocks`` without records ``1..record`` (committed by an earlier run)."""
    for block in blocks:
        rest = block.after(record)
        if rest is not None:
            yield rest


def _upto(blocks: Iterator[Block], record: int) -> Iterator[Block]:
    """``blocks`` up to record ``record`` (``--limit``); the rest of the input is not read."""
    for block in blocks:
        part = block.upto(record)
        if part is not None:
            yield part
        if part is not block:
            return


def _validated(
    blocks: Iterator[Block],
    validator: Validator,
    put: Callable[[QueueItem], None],
    stop: threading.Event,
) -> Iterator[Validated]:
    """Validate blocks, sending their rejects ahead of the batches that follow them."""
    for block in blocks:
        if stop.is_set():
            return
        validated = validator.validate(block)
        if validated.rejects:
            put(validated.rejects)
        yield validated


def _included(records: CsvRecords, target: Target, dataset: Dataset | None = None) -> list[str]:
    """The header columns to parse: the dataset's sources present in the header, or all."""
    dataset = dataset or target.dataset
    if dataset is None:
        return list(records.header)
    return [c.header for c in dataset.columns if c.header in records.header]


def _resolve(
    target: Target, records: CsvRecords, blocks: Iterator[Block]
) -> tuple[Dataset, Iterator[Block]]:
    """The dataset to import into, checked against the header before anything is written."""
    duplicated = records.duplicates()
    if target.dataset is not None and target.renames:
        raise ConfigError("--rename is for --table imports (a dataset names its columns)")
    if target.dataset is not None:
        dataset = target.dataset.with_options(mode=target.mode, key=target.key, table=target.table)
        missing = [
            c.header for c in dataset.columns if c.required and c.header not in records.header
        ]
        if missing:
            likely = likely_delimiter(records.header, records.delimiter)
            hint = f"; is the delimiter {likely!r}? (--delimiter)" if likely else ""
            raise InputError(
                f"the header lacks required column(s) {', '.join(missing)} of dataset "
                f"{dataset.name!r} (header: {', '.join(records.header)}){hint}"
            )
        clash = [c.header for c in dataset.columns if c.header in duplicated]
        if clash:
            raise InputError(f"column(s) {', '.join(clash)} appear more than once in the header")
        return dataset, blocks
    assert target.table is not None
    first = next(blocks, None)
    if first is not None:
        sample = first.batch
    else:
        schema = pa.schema([pa.field(name, pa.binary()) for name in records.header])
        sample = pa.RecordBatch.from_pylist([], schema=schema)
    dataset = infer_dataset(
        target.table,
        records.header,
        sample,
        types=target.types,
        infer=target.infer,
        renames=target.renames,
    )
    dataset = dataset.with_options(mode=target.mode, key=target.key)

    def replay() -> Iterator[Block]:
        if first is not None:
            yield first
        yield from blocks

    return dataset, replay()


def _as_user_error(error: BaseException) -> BaseException:
    if isinstance(error, AntioomError):
        return error
    if isinstance(error, pa.ArrowInvalid):
        return InputError(f"malformed CSV: {str(error).splitlines()[0]}")
    return error


def splittable(target: Target, options: Options) -> bool:
    """Whether parts may commit in any order: inserts without a key (with a key, which of two
    rows wins must not depend on timing) and without a limit over the whole input."""
    dataset = target.dataset
    mode = target.mode or (dataset.mode if dataset else "insert")
    key = target.key or (dataset.key if dataset else None)
    return (
        mode == "insert"
        and not key
        and options.limit is None
        and options.max_rejects is None
        and target.reset is None
    )
