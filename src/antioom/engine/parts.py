"""Splitting one CSV into parts that separate pipelines import side by side.

A part is a byte range of the (uncompressed) input that starts and ends on record boundaries,
and knows the number of its first record, so that every part reports the same record numbers
a single pass would. :func:`plan` finds them in one streaming pass (bounded memory, vectorised
in Arrow): the dialect and header are read from the head as usual, then the data is scanned
for record ends, following the quote state by counting quote characters.

Counting quotes is exact only for well-formed quoting (RFC 4180: a quote opens a value right
after a delimiter or a line end, closes it right before one, and doubles inside it). The scan
checks that every quote in the file sits where RFC 4180 puts it, that lines end in ``\\n`` or
``\\r\\n``, and that the encoding keeps ASCII bytes as they are; when any of that does not hold
(or an escape character or comments are in use, or the input is small), the plan has one part:
the import is still exact, only not parallel.
"""

from __future__ import annotations

import bisect
import codecs
import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from antioom.engine.records import CsvRecords, Dialect
from antioom.engine.source import PeekableReader, Readable

SCAN_CHUNK = 8 << 20
CHECKPOINT_BYTES = 8 << 20  # a Scan's boundaries: parts are cut this close to their target
MIN_PART_BYTES = 16 << 20  # smaller parts cost more in start-up than they gain
# A batch's seq is ``part * PART_SEQS + n``: stable across retries of a part, and the ledger
# rows of one part are a range of seqs (its resume point is found within it).
PART_SEQS = 1 << 32

NEWLINE, CR = 0x0A, 0x0D


@dataclass(frozen=True)
class Part:
    """Bytes ``start..end`` of the input: ``records`` records from ``first_record`` (part
    ``index`` of ``count``; a single part does not know how many records it holds: 0)."""

    index: int
    count: int
    start: int
    end: int
    first_record: int
    records: int = 0

    @property
    def seqs(self) -> range:
        """The batch sequence numbers this part's batches take."""
        return range(self.index * PART_SEQS, (self.index + 1) * PART_SEQS)


@dataclass(frozen=True)
class Plan:
    """How to import one input in parts.

    ``dialect`` parses every part: with several, the detected one with the header's names
    given (the parts hold data records only); with one, the dialect as given (it starts at
    byte 0 and reads its own header). ``why_one_part`` says why the input was not split."""

    dialect: Dialect
    parts: list[Part]
    records: int | None  # data records in the input, when the scan counted them
    report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    why_one_part: str | None = None


OpenRange = Callable[[int, int | None], Readable]


def plan(
    open_range: OpenRange,
    size: int,
    dialect: Dialect,
    parts: int,
    *,
    min_part_bytes: int = MIN_PART_BYTES,
    scanned: Scan | None = None,
) -> Plan:
    """Split the ``size`` bytes that ``open_range(start, end)`` reads into up to ``parts``
    parts. ``scanned``: what a :class:`Scanning` reader found as the input streamed past
    (staging): its boundaries are used instead of scanning the input again."""
    records = CsvRecords(PeekableReader(open_range(0, None)), dialect)
    try:
        head = _head(records)
    finally:
        records.close()
    resolved, start = head
    unsplittable = "the input is empty" if records.empty else _not_splittable(records)
    if unsplittable is None and start is None:
        unsplittable = "the head's bytes cannot be located"
    wanted = 1 if start is None else min(parts, (size - start) // max(1, min_part_bytes))
    if unsplittable is None and wanted <= 1:
        unsplittable = f"the input is smaller than {parts} parts of {min_part_bytes >> 20} MiB"
    if unsplittable is not None or start is None:
        return _one_part(records, dialect, size, unsplittable or "")
    step = (size - start) / wanted
    targets = [start + round(step * k) for k in range(1, wanted)]
    this_input = (start, records.delimiter, records.quote, size)
    if scanned is not None and scanned.of() == this_input:
        irregular, total = scanned.irregular, scanned.records
        offsets = [offset for offset, _ in scanned.boundaries]
        boundaries = [
            scanned.boundaries[i]
            for i in (bisect.bisect_left(offsets, target) for target in targets)
            if i < len(offsets)
        ]
    else:
        scan = _Scanner(records.delimiter, records.quote, one_column=len(records.header) == 1)
        boundaries = scan.run(open_range(start, size), start, targets)
        irregular, total = scan.irregular, scan.records
    if irregular is not None:
        return _one_part(records, dialect, size, irregular)
    cuts = [(start, 1)] + [cut for cut in boundaries if cut[0] < size]
    cuts = [cut for i, cut in enumerate(cuts) if i == 0 or cut[0] > cuts[i - 1][0]]
    ends = [cut[0] for cut in cuts[1:]] + [size]
    nexts = [cut[1] for cut in cuts[1:]] + [total + 1]
    made = [
        Part(index, len(cuts), begin, end, first, following - first)
        for index, ((begin, first), end, following) in enumerate(
            zip(cuts, ends, nexts, strict=True)
        )
    ]
    return Plan(resolved, made, total, records.report, records.notes)


@dataclass(frozen=True)
class Scan:
    """What one pass over the data found: where the data starts (``start``, read with
    ``delimiter`` and ``quote``), record boundaries — (offset just past a record end, number
    of the record after it) — at least every ``CHECKPOINT_BYTES``, the data records of the
    ``size`` bytes, and why counting quotes cannot be trusted (None when it can)."""

    start: int
    delimiter: str
    quote: str
    size: int
    records: int
    boundaries: list[tuple[int, int]]
    irregular: str | None = None

    def of(self) -> tuple[int, str, str, int]:
        """What the scan is valid for: the data's start, delimiter, quote and size."""
        return self.start, self.delimiter, self.quote, self.size

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scan:
        """A Scan from its fields as JSON gives them back (pairs as lists)."""
        return cls(**{**data, "boundaries": [tuple(pair) for pair in data["boundaries"]]})


class Scanning:
    """A reader that scans the bytes it passes on for record boundaries, so that an input
    being staged (whose bytes go by once anyway) need not be read again to be planned.

    The head (up to twice ``max_record_bytes``) is held until the dialect and header are known,
    then the data is scanned in chunks of up to ``SCAN_CHUNK``. :meth:`scan` is None when
    the input cannot be split by counting quotes (:func:`plan` then finds out why) or when
    scanning failed: scanning never fails the read."""

    def __init__(self, source: Readable, dialect: Dialect) -> None:
        self._source = source
        self._dialect = dialect
        self._head_limit = 2 * dialect.max_record_bytes
        self._pending = bytearray()  # the head, then the data not yet scanned
        self._scanner: _Scanner | None = None
        self._start = 0
        self._size = 0
        self._off = False
        self._ended = False

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self._size += len(data)
        if not self._off:
            try:
                self._take(data)
            except Exception:  # a planning problem is the plan's to report, not the upload's
                self._off, self._scanner, self._pending = True, None, bytearray()
        return data

    def _take(self, data: bytes) -> None:
        self._pending += data
        if self._scanner is None:
            if data and len(self._pending) < self._head_limit:
                return
            self._begin()
            if self._scanner is None:
                return
        if len(self._pending) >= SCAN_CHUNK or (not data and self._pending):
            chunk, self._pending = bytes(self._pending), bytearray()
            self._scanner.feed(chunk)
        if not data and not self._ended:
            self._ended = True
            self._scanner.end()

    def _begin(self) -> None:
        """Read the head as :func:`plan` does; start scanning after it."""
        head = bytes(self._pending)
        records = CsvRecords(PeekableReader(io.BytesIO(head)), self._dialect)
        records.close()
        start = records.data_offset
        if records.empty or _not_splittable(records) is not None or start is None:
            self._off, self._pending = True, bytearray()
            return
        self._scanner = _Scanner(
            records.delimiter, records.quote, one_column=len(records.header) == 1
        )
        self._scanner.begin(start, [start + CHECKPOINT_BYTES], every=CHECKPOINT_BYTES)
        self._start, self._delimiter, self._quote = start, records.delimiter, records.quote
        self._pending = bytearray(head[start:])

    def scan(self) -> Scan | None:
        """What was found, once the source has been read to its end."""
        scanner = self._scanner
        if self._off or scanner is None or not self._ended:
            return None
        return Scan(
            self._start,
            self._delimiter,
            self._quote,
            self._size,
            scanner.records,
            scanner.found,
            scanner.irregular,
        )


def _head(records: CsvRecords) -> tuple[Dialect, int | None]:
    """The dialect every part parses with (all detected, header names given) and the byte
    offset of the first data record."""
    dialect = replace(
        records.dialect,
        delimiter=records.delimiter,
        quote_char=records.quote,
        escape_char=records.escape,
        header=False,
        columns=tuple(records.written_header),
        encoding=records.encoding,
        skip_lines=0,
    )
    return dialect, records.data_offset


def _one_part(records: CsvRecords, dialect: Dialect, size: int, why: str) -> Plan:
    """The whole input as one part, parsed as a single import would (``dialect`` as given)."""
    return Plan(dialect, [Part(0, 1, 0, size, 1)], None, records.report, records.notes, why)


def _not_splittable(records: CsvRecords) -> str | None:
    """Why the input cannot be split by counting quotes, or None if it can."""
    if records.escape:
        return "an escape character is in use"
    if records.dialect.comment is not None:
        return "comment lines are dropped"
    if not _ascii_compatible(records.encoding):
        return f"the {records.encoding} encoding does not keep ASCII bytes as they are"
    return None


def _ascii_compatible(encoding: str) -> bool:
    """UTF-8, or a single-byte encoding whose ASCII bytes are ASCII characters."""
    name = codecs.lookup(encoding).name
    if name == "utf-8":
        return True
    try:
        decoded = bytes(range(256)).decode(name, "replace")
    except (UnicodeDecodeError, LookupError):
        return False
    return len(decoded) == 256 and decoded[:128] == "".join(map(chr, range(128)))


def _total(counted: pa.Array | None, upto: int) -> int:
    """How many of the first ``upto`` line ends end a record."""
    if counted is None:
        return upto
    return int(pc.sum(counted.slice(0, upto)).as_py() or 0)


def _may_have_empty_lines(data: bytes) -> bool:
    """Whether a line of the chunk may be empty: a ``\\n`` right after a ``\\n`` (or after
    ``\\n\\r``), or one at the chunk's start (its line began in the chunk before)."""
    return data.startswith((b"\n", b"\r\n")) or b"\n\n" in data or b"\n\r\n" in data


def _byte(value: int) -> pa.Scalar:
    """A uint8 scalar: comparing bytes with a Python int would widen the whole chunk."""
    return pa.scalar(value, pa.uint8())


def _bytes_array(data: bytes) -> pa.Array:
    return pa.Array.from_buffers(pa.uint8(), len(data), [None, pa.py_buffer(data)])


class _Scanner:
    """Finds record ends in a stream of data bytes, chunk by chunk, in Arrow kernels.

    A ``\\n`` ends a record when an even number of quotes precede it (outside quotes). A
    line that is empty (``\\n`` or ``\\r\\n`` alone) is no record when the file has more than
    one column, as Arrow skips it; the last line counts if it has no ``\\n``.
    """

    def __init__(self, delimiter: str, quote: str, *, one_column: bool) -> None:
        self.delimiter = ord(delimiter)
        self.quote = ord(quote) if quote else None
        self.one_column = one_column
        self.records = 0
        self.irregular: str | None = None
        self._in_quotes = False
        self._last_end = -1  # offset of the last record-ending \n
        self._previous = NEWLINE  # the byte before this chunk (a line start before the data)
        self._closing_at_end = False  # a closing quote was the last byte of the chunk
        self._cr_at_end = False  # an unquoted \r was the last byte of the chunk

    def run(self, stream: Readable, start: int, targets: list[int]) -> list[tuple[int, int]]:
        """Scan to the end; return, for each target offset, (offset just past the first record
        end at or after it, number of the record that starts there)."""
        self.begin(start, targets)
        try:
            while self.irregular is None:
                data = stream.read(SCAN_CHUNK)
                if not data:
                    break
                self.feed(data)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        self.end()
        return self.found

    def begin(self, start: int, targets: list[int], every: int = 0) -> None:
        """Expect data from offset ``start``, and the boundaries after ``targets`` (then,
        with ``every``, after each ``every`` bytes more)."""
        self.found: list[tuple[int, int]] = []
        self._pending = list(targets)
        self._every = every
        self._offset = start
        self._last_end = start - 1

    def feed(self, data: bytes) -> None:
        """Scan the next bytes of the data."""
        if self.irregular is not None or not data:
            return
        ends, counted = self._chunk(data, self._offset)
        pending = self._pending
        while pending and len(ends) and ends[-1].as_py() >= pending[0]:
            target = pending.pop(0)
            i = pc.index(pc.greater_equal(ends, target), True).as_py()
            before = _total(counted, i + 1)
            self.found.append((ends[i].as_py() + 1, self.records + before + 1))
            if self._every:
                pending.append(target + self._every)
        self.records += _total(counted, len(ends))
        self._offset += len(data)

    def end(self) -> None:
        """The data has ended: count its last line."""
        if self.irregular is None:
            self._finish(self._offset)

    def _chunk(self, data: bytes, base: int) -> tuple[pa.Array, pa.Array | None]:
        """Record ends in ``data`` (absolute offsets), and whether each one ends a record
        (None: all do). Work a chunk does not need (no quote, no ``\\r``, no empty line: the
        common case) is skipped after a byte search."""
        array = _bytes_array(data)
        if self._closing_at_end and data[0] not in self._separators():
            self.irregular = "a quote is followed by text before the delimiter"
        self._closing_at_end = False
        if self._cr_at_end and data[0] != NEWLINE:
            self.irregular = "a line ends in \\r alone"
        newline = pc.equal(array, _byte(NEWLINE))
        has_cr = CR in data
        cr = pc.equal(array, _byte(CR)) if has_cr else None
        if self.quote is not None and (self._in_quotes or self.quote in data):
            separator = pc.or_(
                pc.or_(pc.equal(array, _byte(self.delimiter)), newline),
                pc.equal(array, _byte(CR)) if cr is None else cr,
            )
            quotes = pc.equal(array, _byte(self.quote))
            odd = pc.bit_wise_and(pc.cumulative_sum(pc.cast(quotes, pa.uint8())), _byte(1))
            inside = pc.not_equal(
                odd, _byte(1 if self._in_quotes else 0)
            )  # the state after each byte
            self._check_quotes(quotes, inside, pc.or_(separator, quotes), data)
            outside = pc.invert(inside)
            newline = pc.and_(newline, outside)
            if cr is not None:
                cr = pc.and_(cr, outside)
            self._in_quotes = bool(inside[-1].as_py())
        if cr is not None:
            self._check_cr(cr, data)
        else:
            self._cr_at_end = False
        positions = pc.indices_nonzero(newline)
        counted = self._counted(positions, array, base) if _may_have_empty_lines(data) else None
        if len(positions):
            self._last_end = base + positions[-1].as_py()
        self._previous = data[-1]
        return pc.add(positions, base), counted

    def _check_quotes(
        self, quotes: pa.Array, inside: pa.Array, separator: pa.Array, data: bytes
    ) -> None:
        """Every quote opens a value right after a separator, or closes one right before a
        separator (a doubled quote is both: a close, then an open after a quote)."""
        before = pa.concat_arrays(
            [pa.array([self._previous in self._separators()]), separator.slice(0, len(data) - 1)]
        )
        after = pa.concat_arrays([separator.slice(1), pa.array([True])])
        opening = pc.and_(quotes, inside)
        closing = pc.and_(quotes, pc.invert(inside))
        if pc.any(pc.and_(opening, pc.invert(before))).as_py():
            self.irregular = "a quote opens a value in mid-field"
        elif pc.any(pc.and_(closing, pc.invert(after))).as_py():
            self.irregular = "a quote is followed by text before the delimiter"
        self._closing_at_end = bool(closing[-1].as_py())

    def _separators(self) -> bytes:
        quote = bytes([self.quote]) if self.quote is not None else b""
        return bytes([self.delimiter, NEWLINE, CR]) + quote

    def _check_cr(self, cr: pa.Array, data: bytes) -> None:
        """Outside quotes, ``\\r`` only ever comes right before ``\\n``."""
        after = pa.concat_arrays(
            [pc.equal(_bytes_array(data[1:]), _byte(NEWLINE)), pa.array([True])]
        )
        if pc.any(pc.and_(cr, pc.invert(after))).as_py():
            self.irregular = "a line ends in \\r alone"
        self._cr_at_end = bool(cr[-1].as_py())

    def _counted(self, positions: pa.Array, array: pa.Array, base: int) -> pa.Array | None:
        """For each line end: 1 if it ends a record, 0 for an empty line that Arrow skips;
        None when every one does (no line of the chunk can be empty)."""
        if self.one_column or not len(positions):
            return None
        ends = pc.cast(positions, pa.int64())
        starts = pa.concat_arrays(
            [
                pa.array([self._last_end - base + 1], pa.int64()),
                pc.add(ends.slice(0, len(ends) - 1), 1),
            ]
        )
        length = pc.subtract(ends, starts)
        shifted = pa.concat_arrays([pa.array([self._previous], pa.uint8()), array])
        cr_before = pc.equal(pc.take(shifted, ends), _byte(CR))  # shifted[i] is the byte before i
        empty = pc.or_(pc.equal(length, 0), pc.and_(pc.equal(length, 1), cr_before))
        return pc.cast(pc.invert(empty), pa.int64())

    def _finish(self, size: int) -> None:
        """The last line counts when it has no ``\\n`` and is not empty."""
        if self._in_quotes:
            self.irregular = "a quoted value is not closed at the end of the input"
            return
        length = size - self._last_end - 1
        if length > 0 and not (length == 1 and self._previous == CR):
            self.records += 1
