"""CSV bytes → blocks of records, parsed incrementally by Arrow's streaming CSV reader.

The flow inside: bytes → :class:`~antioom.engine.decoding.Utf8Reader` (any encoding to UTF-8,
bad bytes as markers) → comment lines dropped → a peeked sample, from which the dialect,
preamble and header are read in Python (:mod:`antioom.engine.sniff`) → Arrow parses the data
records only, with the column names given, a block of bytes at a time in C++.

A record is never bigger than two blocks: the block size is the record-size limit, which is
what makes a "2 GB line" fail fast at bounded memory. Columns are read as raw bytes; typing
and validation happen per block in :mod:`antioom.engine.validate`. Records with the wrong
number of fields are not errors here: they are collected as rejects with their record number.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import io
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from antioom.engine.decoding import (
    Utf8Reader,
    byte_offset,
    canonical_encoding,
    detect_encoding,
    first_marker,
    has_markers,
    show_markers,
)
from antioom.engine.rejects import Reject
from antioom.engine.sniff import SampleTooShort, Sniffed, likely_delimiter, sniff
from antioom.engine.source import PeekableReader, Readable
from antioom.errors import ConfigError, InputError

# Blocks Arrow may read ahead of the blocks we have consumed. Arrow's own read-ahead queue
# holds up to 32 blocks (32 MiB at the default block size); this keeps it to a few.
READAHEAD_BLOCKS = 3
STALL_S = 0.05
QUIET_S = 0.1
SAMPLE_BYTES = 64 << 10  # the dialect sample; grown (up to the record limit) if too short
MARKED_SAMPLE_LINES = 2  # sample lines with undecodable bytes that make a wrong encoding


def _use_jemalloc() -> None:
    """Arrow's jemalloc pool, returning freed pages at once, keeps RSS ~30 MB lower than the
    default mimalloc pool for this allocate-and-free-per-block workload (measured)."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow build without jemalloc: keep the default
        pass


_use_jemalloc()


@dataclass(frozen=True)
class Dialect:
    """How the CSV is written, and the limits that protect the process from it.

    ``None`` means "detect": the delimiter, quote and escape from a sample, the header from
    the first record's values, the encoding from a BOM (else UTF-8), and the preamble (lines
    before the header). An empty ``quote_char``/``escape_char`` means none. ``skip_lines``
    skips that many lines first and turns preamble detection off. ``columns`` names the
    columns (a header row, if any, is then skipped).
    """

    delimiter: str | None = None
    quote_char: str | None = None
    escape_char: str | None = None
    header: bool | None = None
    columns: tuple[str, ...] | None = None
    encoding: str | None = None
    skip_lines: int | None = None
    comment: str | None = None
    null_values: tuple[str, ...] = ()
    max_record_bytes: int = 1 << 20
    max_columns: int = 10_000

    def __post_init__(self) -> None:
        for name in ("delimiter", "comment"):
            value = getattr(self, name)
            if value is not None and len(value) != 1:
                raise ConfigError(f"{name} must be one character, got {value!r}")
        for name in ("quote_char", "escape_char"):
            value = getattr(self, name)
            if value is not None and len(value) > 1:
                raise ConfigError(
                    f"{name.replace('_char', '')} must be one character or empty, got {value!r}"
                )
        if self.delimiter in ("\n", "\r") or (
            self.delimiter is not None and self.delimiter in (self.quote_char, self.escape_char)
        ):
            raise ConfigError(f"{self.delimiter!r} cannot be the delimiter")
        if self.skip_lines is not None and self.skip_lines < 0:
            raise ConfigError("the number of lines to skip cannot be negative")
        if self.max_record_bytes < 1024:
            raise ConfigError("the maximum record size must be at least 1024 bytes")
        if self.encoding is not None:
            canonical_encoding(self.encoding)


@dataclass
class Block:
    """One parsed block: string columns of the records that parsed, plus malformed ones.

    ``suspect``: undecodable bytes have been seen in the input, so values must be checked
    for markers (see :mod:`antioom.engine.decoding`).
    """

    batch: pa.RecordBatch
    first_record: int
    malformed: list[Reject] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    suspect: bool = False

    @property
    def records(self) -> int:
        """Records this block accounts for: parsed rows plus malformed ones."""
        return int(self.batch.num_rows) + len(self.malformed)

    def record_number(self, row: int) -> int:
        """The 1-based record number of parsed row ``row`` of this block."""
        return record_at(self.first_record, self.skipped, row)

    def upto(self, record: int) -> Block | None:
        """This block without its records past ``record``, or None if none is left (``--limit``)."""
        if record < self.first_record:
            return None
        if record >= self.first_record + self.records - 1:
            return self
        gaps = bisect.bisect_right(self.skipped, record)
        rows = record - self.first_record + 1 - gaps
        return Block(
            self.batch.slice(0, rows),
            self.first_record,
            self.malformed[:gaps],
            self.skipped[:gaps],
            self.suspect,
        )

    def after(self, record: int) -> Block | None:
        """This block without its records up to ``record``, or None if none is left: a
        resumed import skips the records an earlier run committed."""
        if record < self.first_record:
            return self
        if record >= self.first_record + self.records - 1:
            return None
        gaps = bisect.bisect_right(self.skipped, record)
        rows = record - self.first_record + 1 - gaps
        return Block(
            self.batch.slice(rows),
            record + 1,
            self.malformed[gaps:],
            self.skipped[gaps:],
            self.suspect,
        )


def record_at(first: int, gaps: Sequence[int], row: int) -> int:
    """The record number of the ``row``-th row of a run of records that starts at ``first``,
    where the records in ``gaps`` (sorted) have no row (malformed or rejected)."""
    number = first + row
    for gap in gaps:
        if gap > number:
            break
        number += 1
    return number


class _MalformedRows:
    """Collects rows whose field count is wrong; Arrow calls us from its parser.

    Arrow numbers every row it parses (from 1, data only: we hand it no header) because the
    reader parses serially (``use_threads=False``); that number places the reject.
    """

    def __init__(self, first_record: int = 1) -> None:
        self._lock = threading.Lock()
        self._offset = first_record - 1
        self.numbers: list[int] = []
        self.rejects: list[Reject] = []

    def __call__(self, row: Any) -> str:
        record = self._offset + int(row.number)
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        reject = Reject(record=record, column=None, reason=reason, values={"": _shown(row.text)})
        with self._lock:
            index = bisect.bisect(self.numbers, record)
            self.numbers.insert(index, record)
            self.rejects.insert(index, reject)
        return "skip"

    def take_below(self, limit: int) -> tuple[list[int], list[Reject]]:
        with self._lock:
            cut = bisect.bisect_left(self.numbers, limit)
            numbers, self.numbers = self.numbers[:cut], self.numbers[cut:]
            rejects, self.rejects = self.rejects[:cut], self.rejects[cut:]
            return numbers, rejects


def _shown(text: str) -> str:
    return show_markers(text) if has_markers(text) else text


def unique_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Header names made unique as DuckDB does, and notes on what was renamed.

    A blank name becomes ``columnN`` (N its 1-based position); a repeated one gets ``_1``,
    ``_2``…; the first occurrence keeps its name. Names that differ in case stay distinct
    here (a dataset may read ``order`` and ``Order``); table columns made from them are told
    apart by :func:`~antioom.engine.validate.column_names`.
    """
    taken: dict[str, int] = {}
    unique: list[str] = []
    notes: list[str] = []
    for position, written in enumerate(names, start=1):
        name = written or f"column{position}"
        if not written:
            notes.append(f"header column {position} has no name: named it {name}")
        base = name
        while name in taken:
            taken[base] += 1
            name = f"{base}_{taken[base]}"
        if name != base:
            notes.append(f"header name {base!r} repeats: column {position} is named {name}")
        taken[name] = 0
        unique.append(name)
    return unique, notes


class CsvRecords:
    """Iterates a CSV byte stream as :class:`Block` objects with only ``include`` columns.

    Construction reads just enough to know the dialect and the header, so callers can check
    it against the dataset before anything is written. ``empty`` is set for an input with
    no record at all (not even a header).
    """

    def __init__(self, stream: Readable, dialect: Dialect, *, first_record: int = 1) -> None:
        self.dialect = dialect
        self.first_record = first_record
        head = PeekableReader(stream)
        encoding = dialect.encoding or detect_encoding(head.peek(1024))
        self._bom = len(codecs.BOM_UTF8) if head.peek(3) == codecs.BOM_UTF8 else 0
        self._decoder = Utf8Reader(head, encoding)
        self.encoding = self._decoder.encoding
        self.data_offset: int | None = None
        decoded: Readable = self._decoder
        quote = dialect.quote_char if dialect.quote_char is not None else '"'
        if dialect.comment is not None:
            decoded = CommentFilter(decoded, dialect.comment, quote)
        self._stream = PeekableReader(decoded)
        self.notes: list[str] = []
        self.empty = False
        sniffed = self._sniff()
        self.delimiter = sniffed.delimiter
        self.quote = sniffed.quote
        self.escape = sniffed.escape
        self.width = sniffed.width
        written = sniffed.names if sniffed.header else []
        if dialect.columns:
            written = list(dialect.columns)
        elif not written:
            written = [""] * sniffed.width
        if len(written) > dialect.max_columns:
            raise InputError(
                f"the header has {len(written)} columns, more than the limit of "
                f"{dialect.max_columns}"
            )
        self.written_header = written
        self.header, renames = unique_names(written)
        if sniffed.header or dialect.columns:
            self.notes += renames
        self.report = {
            "delimiter": sniffed.delimiter,
            "quote": sniffed.quote or None,
            "escape": sniffed.escape or None,
            "header": sniffed.header,
            "skipped_lines": self._skipped_lines,
            "encoding": self._decoder.encoding,
            "detected": sniffed.detected + ([] if dialect.encoding else ["encoding"]),
        }
        self._check_one_column_header(sniffed)
        self._reader: pa_csv.CSVStreamingReader | _NoRecords | None = None
        self._gate = _ReadAheadGate(_CrSafeReader(self._stream), READAHEAD_BLOCKS)
        self._malformed = _MalformedRows(first_record)

    def _sniff(self) -> Sniffed:
        """Read the sample, detect what is not given, and consume the preamble and header."""
        dialect = self.dialect
        limit = dialect.max_record_bytes
        if csv.field_size_limit() < limit:  # only ever raised: the limit is process-wide
            csv.field_size_limit(limit)
        if _fully_given(dialect):
            return self._given(dialect)
        size = min(SAMPLE_BYTES, limit)
        while True:
            sample = self._stream.peek(size)
            at_eof = len(sample) < size
            text = sample.decode("utf-8", "ignore" if not at_eof else "strict")
            skipped = _skip_lines(text, dialect.skip_lines or 0)
            if skipped is not None or at_eof:
                body = text[len(text) if skipped is None else skipped :]
                if not body.strip("\r\n"):
                    if at_eof:
                        return self._empty_input(text)
                else:
                    sniffed = self._sniff_sample(body, at_eof, final=at_eof or size >= limit)
                    if sniffed is not None:
                        break
            if size >= limit:
                raise InputError(
                    f"the header is longer than the maximum record size of {limit} bytes "
                    "(--max-record-bytes)"
                )
            size = min(size * 4, limit)
        self._check_encoding(body, sniffed)
        self._skipped_lines = (dialect.skip_lines or 0) + _count_lines(body[: sniffed.preamble_end])
        consumed = (skipped or 0) + sniffed.data_start
        self._stream.read(len(text[:consumed].encode("utf-8")))
        self.data_offset = self._raw_length(text[:consumed])
        return sniffed

    def _raw_length(self, text: str) -> int | None:
        """How many input bytes ``text`` (the preamble and header) came from, when that is
        known: no undecodable bytes in it and no comment lines dropped."""
        if self.dialect.comment is not None or has_markers(text):
            return None
        try:
            if codecs.lookup(self.encoding).name in ("utf-8", "utf-8-sig"):
                return self._bom + len(text.encode("utf-8"))  # the decoder dropped the BOM
            return len(text.encode(self.encoding))  # any BOM was decoded as text
        except UnicodeEncodeError:
            return None

    def _given(self, dialect: Dialect) -> Sniffed:
        """Nothing to detect (a part of a split input): the data starts at the first byte."""
        assert dialect.columns is not None
        self._skipped_lines = 0
        self.data_offset = self._bom
        if not self._stream.peek(1):
            return self._empty_input("")
        return Sniffed(
            delimiter=dialect.delimiter or ",",
            quote=dialect.quote_char or "",
            escape=dialect.escape_char or "",
            header=False,
            width=len(dialect.columns),
            names=[],
            preamble_end=0,
            data_start=0,
        )

    def _sniff_sample(self, body: str, at_eof: bool, *, final: bool) -> Sniffed | None:
        """Sniff ``body``; None when the sample is too short to tell (a header or a quoted
        value longer than it)."""
        dialect = self.dialect
        try:
            sniffed = sniff(
                body,
                at_eof=at_eof,
                delimiter=dialect.delimiter,
                quote=dialect.quote_char,
                escape=dialect.escape_char,
                header=True if dialect.columns and dialect.header is None else dialect.header,
                preamble=dialect.skip_lines is None,
                final=final,
            )
        except SampleTooShort:
            return None
        except InputError:
            if at_eof:
                raise
            return None
        if not at_eof and sniffed.data_start >= len(body):
            return None
        return sniffed

    def _empty_input(self, text: str) -> Sniffed:
        self.empty = True
        self._skipped_lines = _count_lines(text)
        self.notes.append("the input is empty: nothing to import")
        quote = self.dialect.quote_char
        return Sniffed(
            delimiter=self.dialect.delimiter or ",",
            quote='"' if quote is None else quote,
            escape=self.dialect.escape_char or "",
            header=self.dialect.header is not False,
            width=len(self.dialect.columns or ()),
            names=[],
            preamble_end=0,
            data_start=len(text),
        )

    def _check_encoding(self, body: str, sniffed: Sniffed) -> None:
        """Undecodable bytes in the header, or on several sample lines: a wrong encoding."""
        if not self._decoder.bad_bytes:
            return
        header_text = body[sniffed.preamble_end : sniffed.data_start] if sniffed.header else ""
        marked_lines = sum(1 for line in body.splitlines() if has_markers(line))
        if not has_markers(header_text) and (
            self.dialect.encoding is not None or marked_lines < MARKED_SAMPLE_LINES
        ):
            return
        found = first_marker(body)
        assert found is not None
        offset, byte = found
        where = byte_offset(body, offset)
        raise InputError(
            f"the input is not valid {self._decoder.encoding}: byte 0x{byte:02x} near byte "
            f"offset {where}{' in the header' if has_markers(header_text) else ''}; "
            "pass its encoding, e.g. --encoding cp1252 (or latin-1)"
        )

    def _check_one_column_header(self, sniffed: Sniffed) -> None:
        if not sniffed.header or "delimiter" in sniffed.detected:
            return
        likely = likely_delimiter(self.header, self.delimiter)
        if likely is not None:
            shown = "\\t" if likely == "\t" else likely
            self.notes.append(
                f"the header reads as one column {self.header[0]!r}: is the delimiter "
                f"{shown!r}? (--delimiter {shown!r}, or leave it out to detect it)"
            )

    def duplicates(self) -> list[str]:
        """Names written more than once in the header (a dataset column may not be one)."""
        seen: set[str] = set()
        return [n for n in self.written_header if n and (n in seen or seen.add(n))]  # type: ignore[func-returns-value]

    def blocks(self, include: Sequence[str]) -> Iterator[Block]:
        """Parse the rest of the input, yielding blocks with the ``include`` columns as bytes."""
        if self.empty:
            return
        reader = self._open(include)
        next_record = self.first_record
        while True:
            try:
                self._gate.release()
                with self._gate.consumer_waiting():
                    batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise self._explain(exc, next_record) from None
            end = next_record + batch.num_rows
            numbers, rejects = self._malformed.take_below(end)
            while True:  # Malformed rows inside the block push its end further.
                more_numbers, more_rejects = self._malformed.take_below(
                    next_record + batch.num_rows + len(numbers)
                )
                if not more_numbers:
                    break
                numbers += more_numbers
                rejects += more_rejects
            yield Block(batch, next_record, rejects, numbers, self._decoder.bad_bytes > 0)
            next_record += batch.num_rows + len(numbers)
        numbers, rejects = self._malformed.take_below(1 << 62)
        if rejects:
            empty = pa.RecordBatch.from_pylist([], schema=reader.schema)
            yield Block(empty, next_record, rejects, numbers, self._decoder.bad_bytes > 0)

    def _open(self, include: Sequence[str]) -> pa_csv.CSVStreamingReader | _NoRecords:
        dialect = self.dialect
        read_options = pa_csv.ReadOptions(
            use_threads=False,
            block_size=dialect.max_record_bytes,
            column_names=list(self.header),
        )
        parse_options = pa_csv.ParseOptions(
            delimiter=self.delimiter,
            quote_char=self.quote or False,
            escape_char=self.escape or False,
            double_quote=bool(self.quote),
            newlines_in_values=bool(self.quote),
            # In a one-column file a blank line is a value (NULL), as in DuckDB and sqlite3.
            ignore_empty_lines=len(self.header) > 1,
            invalid_row_handler=self._malformed,
        )
        convert_options = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(include, pa.binary()),
            include_columns=list(include),
            strings_can_be_null=True,
            null_values=["", *dialect.null_values],
            quoted_strings_can_be_null=False,
        )
        try:
            with self._gate.consumer_waiting():
                reader = pa_csv.open_csv(
                    pa.PythonFile(self._gate, mode="r"),
                    read_options=read_options,
                    parse_options=parse_options,
                    convert_options=convert_options,
                )
        except pa.ArrowInvalid as exc:
            if not str(exc).startswith("Empty CSV file"):
                raise self._explain(exc, 1) from None
            reader = _NoRecords(include)  # a header and no data
        self._reader = reader
        return reader

    def _explain(self, exc: pa.ArrowInvalid, near_record: int) -> InputError:
        message = str(exc)
        if "straddling" in message or "straddles" in message:
            return InputError(
                f"a record near record {near_record} is larger than the maximum record size of "
                f"{self.dialect.max_record_bytes} bytes (--max-record-bytes); is the file "
                "missing newlines or the quoting broken?"
            )
        first = _shown(message.splitlines()[0])
        return InputError(f"malformed CSV near record {near_record}: {first}")

    def close(self) -> None:
        self._gate.close()
        if self._reader is not None:
            self._reader.close()


class _NoRecords:
    """Stands in for Arrow's reader when the input holds a header and nothing else."""

    def __init__(self, include: Sequence[str]) -> None:
        self.schema = pa.schema([pa.field(name, pa.binary()) for name in include])

    def read_next_batch(self) -> pa.RecordBatch:
        raise StopIteration

    def close(self) -> None:
        pass


def _fully_given(dialect: Dialect) -> bool:
    """Every setting given and no header or preamble to find: the data starts at once."""
    return (
        dialect.delimiter is not None
        and dialect.quote_char is not None
        and dialect.escape_char is not None
        and dialect.header is False
        and bool(dialect.columns)
        and dialect.skip_lines == 0
    )


def _skip_lines(text: str, count: int) -> int | None:
    """Characters in the first ``count`` lines of ``text``; None if it has fewer lines."""
    if count == 0:
        return 0
    position = 0
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if not line.endswith(("\n", "\r")):
            return None
        position += len(line)
        if number == count:
            return position
    return None


def _count_lines(text: str) -> int:
    return sum(1 for _ in io.StringIO(text, newline=""))


class CommentFilter:
    """Drops lines that start with ``comment`` (outside quoted values) from a UTF-8 stream.

    The quote state is followed by counting quote characters, which is exact for doubled
    quotes (``""``) and approximate only where a quote is escaped with a backslash.
    """

    def __init__(self, raw: Readable, comment: str, quote: str) -> None:
        self._raw = raw
        self._comment = comment.encode("utf-8")
        self._quote = quote.encode("utf-8") if quote else b""
        self._in_quotes = False
        self._line_start = True
        self._in_comment = False
        self._line_end = re.compile(rb"\r\n|\r|\n")

    def read(self, size: int = -1, /) -> bytes:
        while True:
            data = self._raw.read(size)
            if not data:
                return b""
            out = self._filter(data)
            if out:
                return out

    def _filter(self, data: bytes) -> bytes:
        kept: list[bytes] = []
        position = 0
        while position < len(data):
            if self._in_comment:
                end = self._line_end.search(data, position)
                if end is None:
                    return b"".join(kept)
                position = end.end()
                self._in_comment = False
                self._line_start = True
                continue
            if (
                self._line_start
                and not self._in_quotes
                and data.startswith(self._comment, position)
            ):
                self._in_comment = True
                continue
            end = self._line_end.search(data, position)
            stop = len(data) if end is None else end.end()
            if self._quote and data.count(self._quote, position, stop) % 2:
                self._in_quotes = not self._in_quotes
            kept.append(data[position:stop])
            self._line_start = end is not None
            position = stop
        return b"".join(kept)


class _CrSafeReader:
    """Never hands Arrow a read that ends in ``\\r`` (before the end of the input).

    Arrow (up to at least 26) loses the ``\\n`` of a quoted ``\\r\\n`` whose ``\\r`` is the
    last byte of a block, and each read is a block: holding the ``\\r`` back to the next
    read keeps ``\\r\\n`` in one block.
    """

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._held = b""

    def read(self, size: int = -1, /) -> bytes:
        while True:
            data = self._raw.read(size)
            if not data:
                held, self._held = self._held, b""
                return held
            data = self._held + data
            body = data.rstrip(b"\r")
            self._held = data[len(body) :]
            if body:
                return body


class _ReadAheadGate:
    """Keeps Arrow's background reader at most ``blocks`` reads ahead of the consumer.

    A permit is spent per read and returned each time the consumer takes a parsed block. If
    the consumer is itself waiting on Arrow (opening, or inside ``read_next_batch``) and no
    permit has come for ``STALL_S``, Arrow needs more bytes to make progress (a record spanning
    blocks, a decoder reading ahead) and one read is let through: the gate cannot deadlock.
    When the consumer is slow elsewhere (the database), Arrow stops reading: bounded memory,
    and backpressure reaches the source.
    """

    def __init__(self, stream: Readable, blocks: int) -> None:
        self._stream = stream
        self._permits = blocks
        self._consumer_waiting = False
        self._eof = False
        self._in_flight = 0
        self._last_read = 0.0
        self._cond = threading.Condition()
        self.closed = False

    def read(self, size: int = -1, /) -> bytes:
        with self._cond:
            self._last_read = time.monotonic()
            while self._permits <= 0 and not self.closed:
                stalled = not self._cond.wait(timeout=STALL_S)
                if stalled and self._consumer_waiting:
                    break  # the consumer is waiting for this very read: let it through
            if self.closed or self._eof:
                return b""
            self._permits -= 1
            self._in_flight += 1
        data = b""  # also when the source raises: nothing more is read after an error
        try:
            data = self._stream.read(size)
        finally:
            with self._cond:
                self._in_flight -= 1
                if not data:  # end of input: later reads are free and immediate
                    self._eof = True
                    self._permits += 1
                self._cond.notify_all()
        return data

    @contextmanager
    def consumer_waiting(self) -> Iterator[None]:
        """Mark that the consumer is blocked on Arrow, which may then read what it needs."""
        with self._cond:
            self._consumer_waiting = True
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._consumer_waiting = False

    def release(self) -> None:
        with self._cond:
            self._permits += 1
            self._cond.notify_all()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self, wait_s: float = 2.0) -> None:
        """Refuse further reads, then wait (at most ``wait_s``) until Arrow's reader has gone
        quiet: no read in progress and, unless it has read the end of the input (after which
        its reading thread stops), none started for ``QUIET_S``. An Arrow thread calling into
        Python while the interpreter shuts down would abort the process."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            while time.monotonic() < deadline:
                quiet_for = time.monotonic() - self._last_read
                if self._in_flight == 0 and (self._eof or quiet_for >= QUIET_S):
                    return
                self._cond.wait(timeout=QUIET_S)
