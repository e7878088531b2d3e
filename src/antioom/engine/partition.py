"""Key partitions: an upsert or keyed insert written by several connections at once.

The database loaders keep one server core busy; a keyed write is bound by it (index lookups,
conflict checks). Several writers put more cores on one import, and stay correct when every
row of a key goes to the same writer, in input order: each writer then sees the rows of its
keys as a single writer would (last one wins, first occurrence lands), and no two writers
touch one row. The partition of a row is a function of its typed key alone, the same in
every run, so a resumed import sends each key to the writer that had it before.

Each partition is an import stream of its own: the rows of its keys and the rejects of its
records (record number modulo the partitions), cut into batches numbered in its own range
of ledger sequence numbers, and resumed from its own last committed record. A batch's
ledger span counts only the records its partition accounts for (its rows and its rejects
since its batch before), so that the spans of all partitions still add up to the records
read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from antioom.engine.batching import Batch
from antioom.engine.datasets import Dataset
from antioom.engine.parts import PART_SEQS
from antioom.engine.validate import Validated

# Where the sequence numbers of an import in N partitions start: above any import in parts
# (which use 0 .. parts * PART_SEQS), and apart for each N, so that a resume with another
# partition count is refused instead of mixing two layouts.
PARTITIONED_SEQS = 1 << 48
MAX_PARTITIONS = 64
PARTITIONABLE_TYPES = ("string", "integer")
POSITIVE = (1 << 62) - 1


def partition_seqs(count: int, index: int) -> range:
    """The ledger sequence numbers of partition ``index`` of ``count``."""
    start = PARTITIONED_SEQS * count + index * PART_SEQS
    return range(start, start + PART_SEQS)


def all_partition_seqs(count: int) -> range:
    """The sequence numbers of all ``count`` partitions of one import."""
    start = PARTITIONED_SEQS * count
    return range(start, start + count * PART_SEQS)


def why_not_partitioned(dataset: Dataset) -> str | None:
    """Why ``dataset`` cannot be written by key partitions, or None if it can."""
    if not dataset.key:
        return "only upserts and keyed inserts are written by key partitions"
    keys = [c for c in dataset.columns if c.name in dataset.key]
    inexact = [c.name for c in keys if c.type not in PARTITIONABLE_TYPES]
    if inexact:
        return f"key column(s) {', '.join(inexact)} are not text or integers"
    return None


def key_partitions(table: pa.Table, key: Sequence[str], count: int) -> pa.Array:
    """Each row's partition (0 .. count-1), from its key columns' values alone.

    Integers by value, text by the sum of its UTF-8 bytes and its length, without trailing
    spaces (which PostgreSQL's ``char(n)`` ignores and ``varchar(n)`` may cut: keys equal
    there share a partition): vectorised, stable across runs and processes, spread well
    enough for typical keys. Keys the database takes for equal must agree; that is all
    correctness needs."""
    total: pa.Array | None = None
    for position, name in enumerate(key, start=1):
        column = table.column(name).combine_chunks()
        value = (
            pc.cast(column, pa.int64())
            if pa.types.is_integer(column.type)
            else _text_hash(pc.utf8_rtrim(pc.cast(column, pa.large_string()), characters=" "))
        )
        value = pc.fill_null(value, 0)
        total = value if total is None else pc.add(total, pc.multiply(value, position))
    assert total is not None  # a key has at least one column
    # Non-negative (the sums may wrap), then the remainder: integer division truncates.
    positive = pc.bit_wise_and(total, POSITIVE)
    return pc.subtract(positive, pc.multiply(pc.divide(positive, count), count))


def split(block: Validated, key: Sequence[str], count: int, records: pa.Array) -> list[Validated]:
    """``block`` cut into its ``count`` partitions: each keeps the rows of its keys (with
    their record numbers, ``records``) and the rejects of its records."""
    owners = key_partitions(block.table, key, count)
    parts = []
    for index in range(count):
        mine = pc.equal(owners, index)
        parts.append(
            Validated(
                block.table.filter(mine),
                block.first_record,
                rejects=[r for r in block.rejects if r.record % count == index],
                records=records.filter(mine),
            )
        )
    return parts


def after_record(block: Validated, record: int) -> Validated:
    """``block`` without its rows and rejects up to ``record`` (a resumed partition's
    committed records; ``block`` is one of :func:`split`'s)."""
    assert block.records is not None
    if record < block.first_record:
        return block
    later = pc.greater(block.records, record)
    return Validated(
        block.table.filter(later),
        block.first_record,
        rejects=[r for r in block.rejects if r.record > record],
        records=block.records.filter(later),
    )


class Spans:
    """The ledger spans of one partition's batches: a batch accounts for its rows and the
    partition's rejects since its batch before (``start_record`` set so that
    ``end_record - start_record + 1`` counts them), not for the other partitions' records.

    Memory stays bounded by one block's rejects: every batch cut from now on ends at or after
    the first record of the latest block that brought this partition rows, so the rejects
    before that block are only counted; those of blocks after it (no rows of ours) are all
    counted by the next batch, or by none (they follow the partition's last row)."""

    def __init__(self, end_record: int) -> None:
        self.end_record = end_record
        self._settled = 0  # rejects before the latest block with rows of ours
        self._in_row_block: deque[int] = deque()  # that block's rejects (record numbers)
        self._after = 0  # rejects of the blocks after it

    def block(self, block: Validated) -> None:
        """Note ``block`` (one of this partition's, in input order) before its rows are
        batched."""
        if block.table.num_rows:
            self._settled += len(self._in_row_block) + self._after
            self._in_row_block = deque(reject.record for reject in block.rejects)
            self._after = 0
        else:
            self._after += len(block.rejects)

    def account(self, batch: Batch) -> None:
        end = batch.end_record
        rejected, self._settled = self._settled, 0
        while self._in_row_block and self._in_row_block[0] <= end:
            self._in_row_block.popleft()
            rejected += 1
        batch.start_record = end - (batch.rows + rejected) + 1
        self.end_record = end


def row_records(block: Validated) -> pa.Array:
    """The record number of each row of ``block``: its records minus its gaps."""
    if block.records is not None:
        return block.records
    count = block.table.num_rows + len(block.gaps)
    numbers = pc.add(
        pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), count)), block.first_record - 1
    )
    if not block.gaps:
        return numbers
    return numbers.filter(pc.invert(pc.is_in(numbers, value_set=pa.array(block.gaps, pa.int64()))))


def _text_hash(values: pa.Array) -> pa.Array:
    """Sum of each value's UTF-8 bytes plus its length times 131, from one running sum over
    the column's bytes: every byte counts, so keys that differ anywhere spread. The running
    sum is 32-bit and may wrap: differences of wrapped sums are still exact modulo 2**32."""
    offsets, data = values.buffers()[1], values.buffers()[2]
    size = len(values)
    ends = pa.Array.from_buffers(pa.int64(), size + 1, [None, offsets], offset=values.offset)
    starts, stops = ends[:-1], ends[1:]
    lengths = pc.multiply(pc.subtract(stops, starts), 131)
    total = int(ends[size].as_py()) if data is not None else 0
    if total == 0:
        return lengths
    content = pa.Array.from_buffers(pa.uint8(), total, [None, data])
    running = pc.cumulative_sum(pc.cast(content, pa.uint32()))  # running[i]: bytes 0..i
    before = pc.if_else(
        pc.greater(starts, 0), pc.take(running, pc.max_element_wise(pc.subtract(starts, 1), 0)), 0
    )
    through = pc.if_else(
        pc.greater(stops, 0), pc.take(running, pc.max_element_wise(pc.subtract(stops, 1), 0)), 0
    )
    sums = pc.cast(
        pc.subtract(pc.cast(through, pa.uint32()), pc.cast(before, pa.uint32())), pa.int64()
    )
    return pc.add(sums, lengths)
