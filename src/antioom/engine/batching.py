"""Batches: the unit of writing, committing and progress.

Validated blocks (whatever size the parser produced) are re-cut into batches of at most
``batch_size`` rows and about ``batch_bytes`` bytes. A batch carries its import id and sequence
number so that a sink can commit each batch exactly once, even when several workers share an
import, and knows the input record number of each of its rows for error reports.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from antioom.engine.records import record_at
from antioom.engine.validate import Validated


@dataclass(frozen=True)
class _Segment:
    """Rows ``row_offset…`` of a batch come from a block starting at ``first_record``."""

    row_offset: int
    block_row: int
    first_record: int
    gaps: list[int]
    records: pa.Array | None = None  # the block's row record numbers, when it was filtered


@dataclass
class Batch:
    """Typed, valid rows ready for a sink, and where they came from in the input."""

    import_id: str
    seq: int
    table: pa.Table
    segments: list[_Segment] = field(default_factory=list, repr=False)
    # The first input record this batch accounts for: the one after the batch before it (the
    # records between were rejected), so that the ledger's spans add up to the records read.
    start_record: int = 1
    payload: Any = field(default=None, repr=False)  # the sink's encoding, made off-thread
    # Called by the sink with the rows the database refused (RowErrors), just before it
    # commits the batch: the engine makes their rejects durable first, so that a crash right
    # after the commit cannot lose them (see sinks.base.before_commit).
    before_commit: Callable[[list[Any]], None] | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def record_number(self, row: int) -> int:
        """The 1-based input record number of row ``row`` of this batch (a batch made
        without segments holds records ``1..rows``)."""
        if not self.segments:
            return row + 1
        offsets = [segment.row_offset for segment in self.segments]
        segment = self.segments[bisect.bisect_right(offsets, row) - 1]
        block_row = segment.block_row + row - segment.row_offset
        if segment.records is not None:
            return int(segment.records[block_row].as_py())
        return record_at(segment.first_record, segment.gaps, block_row)

    @property
    def end_record(self) -> int:
        """The record number of the last row: the ledger's resume point once committed."""
        return self.record_number(self.rows - 1) if self.rows else 0


class Batcher:
    """Cuts validated blocks, handed in one at a time, into batches (sequence numbers from
    ``first_seq``; the first accounts for the records from ``first_record``)."""

    def __init__(
        self,
        import_id: str,
        *,
        batch_size: int,
        batch_bytes: int,
        first_seq: int = 0,
        first_record: int = 1,
    ) -> None:
        self.import_id = import_id
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.seq = first_seq
        self.start = first_record
        self._pieces: list[pa.Table] = []
        self._segments: list[_Segment] = []
        self._rows = 0
        self._size = 0

    def add(self, block: Validated) -> Iterator[Batch]:
        """The batches ``block`` completes."""
        table = block.table
        row_bytes = max(1, table.nbytes // max(1, table.num_rows))
        offset = 0
        while offset < table.num_rows:
            room = min(
                self.batch_size - self._rows, max(1, (self.batch_bytes - self._size) // row_bytes)
            )
            piece = table.slice(offset, room)
            self._segments.append(
                _Segment(self._rows, offset, block.first_record, block.gaps, block.records)
            )
            self._pieces.append(piece)
            self._rows += piece.num_rows
            self._size += piece.num_rows * row_bytes
            offset += piece.num_rows
            if self._rows >= self.batch_size or self._size >= self.batch_bytes:
                yield self._cut()

    def finish(self) -> Iterator[Batch]:
        """The last, partly filled batch, if any."""
        if self._pieces:
            yield self._cut()

    def _cut(self) -> Batch:
        batch = Batch(self.import_id, self.seq, _combine(self._pieces), self._segments, self.start)
        self.seq += 1
        self.start = batch.end_record + 1
        self._pieces, self._segments, self._rows, self._size = [], [], 0, 0
        return batch


def rebatch(
    validated: Iterable[Validated],
    import_id: str,
    *,
    batch_size: int,
    batch_bytes: int,
    first_seq: int = 0,
    first_record: int = 1,
) -> Iterator[Batch]:
    """Cut a stream of validated blocks into batches (see :class:`Batcher`)."""
    batcher = Batcher(
        import_id,
        batch_size=batch_size,
        batch_bytes=batch_bytes,
        first_seq=first_seq,
        first_record=first_record,
    )
    for block in validated:
        yield from batcher.add(block)
    yield from batcher.finish()


def _combine(pieces: list[pa.Table]) -> pa.Table:
    table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
    return table.combine_chunks()


def keep_last(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """``table`` with only the last row of each key, in input order.

    For sinks whose bulk upsert cannot touch a row twice in one statement (PostgreSQL's
    ``ON CONFLICT DO UPDATE``): dropping the earlier occurrences gives "last one wins".
    """
    rows = last_rows(table, key)
    return table if rows is None else table.take(rows)


def last_rows(table: pa.Table, key: tuple[str, ...]) -> pa.Array | None:
    """The indices (ascending) of the last row of each key, or None if no key repeats."""
    if len(key) == 1 and len(pc.unique(table.column(key[0]))) == table.num_rows:
        return None  # (unique: a third of count_distinct's time; one null counts as a key)
    numbered = table.select(list(key)).append_column(
        "antioom_row", pa.array(range(table.num_rows), pa.int64())
    )
    last = numbered.group_by(list(key)).aggregate([("antioom_row", "max")])
    if last.num_rows == table.num_rows:
        return None
    rows = last.column("antioom_row_max").combine_chunks()
    return pc.take(rows, pc.sort_indices(rows))
