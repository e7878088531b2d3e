"""CSV bytes → blocks of records, parsed incrementally by Arrow's streaming CSV reader.

Arrow parses a block of bytes at a time in C++, so a record is never bigger than two blocks:
the block size is the record-size limit, which is what makes a "2 GB line" fail fast at
bounded memory. Columns are read as raw bytes; decoding and validation happen per block in
:mod:`antioom.engine.validate`. Records with the wrong number of fields are not errors here:
they are collected as rejects with their record number.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import io
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from antioom.engine.rejects import Reject
from antioom.engine.source import PeekableReader, Readable
from antioom.errors import ConfigError, InputError

SNIFF_DELIMITERS = ",;\t|"
# Blocks Arrow may read ahead of the blocks we have consumed. Arrow's own read-ahead queue
# holds up to 32 blocks (32 MiB at the default block size); this keeps it to a few.
READAHEAD_BLOCKS = 3
STALL_S = 0.05
QUIET_S = 0.1


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
    """How the CSV is written, and the limits that protect the process from it."""

    delimiter: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    encoding: str = "utf-8"
    sniff: bool = False
    max_record_bytes: int = 1 << 20
    max_columns: int = 10_000

    def __post_init__(self) -> None:
        for name in ("delimiter", "quote_char", "escape_char"):
            value = getattr(self, name)
            if value is not None and len(value) != 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be one character, got {value!r}")
        if not self.header and not self.columns:
            raise ConfigError("without a header, --columns must name the columns")
        if self.max_record_bytes < 1024:
            raise ConfigError("the maximum record size must be at least 1024 bytes")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(f"unknown encoding {self.encoding!r}") from None


@dataclass
class Block:
    """One parsed block: string columns of the records that parsed, plus malformed ones."""

    batch: pa.RecordBatch
    first_record: int
    malformed: list[Reject] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    @property
    def records(self) -> int:
        """Records this block accounts for: parsed rows plus malformed ones."""
        return int(self.batch.num_rows) + len(self.malformed)

    def record_number(self, row: int) -> int:
        """The 1-based record number of parsed row ``row`` of this block."""
        return record_at(self.first_record, self.skipped, row)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


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

    Arrow numbers every row (header included) because the reader parses serially
    (``use_threads=False``); that number is what places the reject in the input.
    """

    def __init__(self, header_rows: int) -> None:
        self._header_rows = header_rows
        self._lock = threading.Lock()
        self.numbers: list[int] = []
        self.rejects: list[Reject] = []

    def __call__(self, row: Any) -> str:
        record = int(row.number) - self._header_rows
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        with self._lock:
            index = bisect.bisect(self.numbers, record)
            self.numbers.insert(index, record)
            self.rejects.insert(
                index, Reject(record=record, column=None, reason=reason, values={"": row.text})
            )
        return "skip"

    def take_below(self, limit: int) -> tuple[list[int], list[Reject]]:
        with self._lock:
            cut = bisect.bisect_left(self.numbers, limit)
            numbers, self.numbers = self.numbers[:cut], self.numbers[cut:]
            rejects, self.rejects = self.rejects[:cut], self.rejects[cut:]
            return numbers, rejects


class CsvRecords:
    """Iterates a CSV byte stream as :class:`Block` objects with only ``include`` columns.

    Construction reads just enough to know the header, so callers can check it against the
    dataset before anything is written.
    """

    def __init__(self, stream: Readable, dialect: Dialect) -> None:
        self.dialect = dialect
        self._stream = PeekableReader(stream)
        self.delimiter = dialect.delimiter
        self._raw_header: list[str] = list(dialect.columns or ())
        if dialect.header:
            self.header = self._read_header()
        else:
            assert dialect.columns is not None
            self.header = list(dialect.columns)
        if len(self.header) > dialect.max_columns:
            raise InputError(
                f"the header has {len(self.header)} columns, more than the limit of "
                f"{dialect.max_columns}"
            )
        self._reader: pa_csv.CSVStreamingReader | None = None
        self._gate = _ReadAheadGate(self._stream, READAHEAD_BLOCKS)
        self._malformed = _MalformedRows(1 if dialect.header else 0)

    def _read_header(self) -> list[str]:
        """Parse the first record with Python's csv module from a peeked prefix."""
        limit = self.dialect.max_record_bytes
        if csv.field_size_limit() < limit:  # only ever raised: the limit is process-wide
            csv.field_size_limit(limit)
        size = min(64 << 10, limit)
        while True:
            prefix = self._stream.peek(size)
            at_eof = len(prefix) < size
            text = self._decode_prefix(prefix, final=at_eof)
            if self.dialect.sniff:
                self._sniff(text)
            try:
                # newline="": CR, LF and CRLF all end a record, as they do for Arrow.
                reader = csv.reader(io.StringIO(text, newline=""), **self._csv_kwargs())
                rows = [row for row in reader if row]
            except csv.Error as exc:
                raise InputError(f"cannot parse the header: {exc}") from None
            if rows and (len(rows) > 1 or at_eof):
                if any(_has_surrogates(name) for name in rows[0]):
                    raise InputError(f"the header is not valid {self.dialect.encoding}")
                self._raw_header = rows[0]
                return [name.strip() for name in rows[0]]
            if at_eof:
                raise InputError("the input is empty: no header row")
            if size >= limit:
                raise InputError(
                    f"the header is longer than the maximum record size of {limit} bytes"
                )
            size = min(size * 4, limit)

    def _decode_prefix(self, prefix: bytes, *, final: bool) -> str:
        """Decode the peeked prefix. Bad bytes beyond the header are the data's business
        (reported later with their record number), so they are escaped, not fatal, here."""
        decoder = codecs.getincrementaldecoder(self.dialect.encoding)("surrogateescape")
        try:
            text = decoder.decode(prefix, final=final)
        except UnicodeDecodeError as exc:  # codecs without surrogateescape support
            raise InputError(
                f"the input is not valid {self.dialect.encoding} (byte offset {exc.start})"
            ) from None
        return text.removeprefix("\ufeff")

    def _sniff(self, text: str) -> None:
        try:
            sniffed = csv.Sniffer().sniff(text[: 64 << 10], delimiters=SNIFF_DELIMITERS)
        except csv.Error:
            raise InputError("could not detect the delimiter; pass --delimiter") from None
        self.delimiter = sniffed.delimiter

    def _csv_kwargs(self) -> dict[str, Any]:
        quote = self.dialect.quote_char
        return {
            "delimiter": self.delimiter,
            "quotechar": quote or '"',
            "quoting": csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
            "escapechar": self.dialect.escape_char,
            "strict": False,
        }

    def duplicates(self) -> list[str]:
        seen: set[str] = set()
        return [name for name in self.header if name in seen or seen.add(name)]  # type: ignore[func-returns-value]

    def blocks(self, include: Sequence[str]) -> Iterator[Block]:
        """Parse the rest of the input, yielding blocks with the ``include`` columns as strings."""
        reader = self._open(include)
        next_record = 1
        while True:
            try:
                self._gate.release()
                with self._gate.consumer_waiting():
                    batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise self._explain(exc, next_record) from None
            except UnicodeError as exc:
                raise InputError(
                    f"input is not valid {self.dialect.encoding} after record {next_record - 1}: "
                    f"{exc}"
                ) from None
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
            yield Block(batch, next_record, rejects, numbers)
            next_record += batch.num_rows + len(numbers)
        numbers, rejects = self._malformed.take_below(1 << 62)
        if rejects:
            empty = pa.RecordBatch.from_pylist([], schema=reader.schema)
            yield Block(empty, next_record, rejects, numbers)

    def _open(self, include: Sequence[str]) -> pa_csv.CSVStreamingReader:
        dialect = self.dialect
        read_options = pa_csv.ReadOptions(
            use_threads=False,
            block_size=dialect.max_record_bytes,
            encoding=dialect.encoding,
            column_names=None if dialect.header else list(self.header),
        )
        # Arrow names the header's columns exactly as written; we matched on stripped names.
        raw_names = self._raw_header_names()
        parse_options = pa_csv.ParseOptions(
            delimiter=self.delimiter,
            quote_char=dialect.quote_char or False,
            escape_char=dialect.escape_char or False,
            double_quote=dialect.quote_char is not None,
            newlines_in_values=True,
            ignore_empty_lines=True,
            invalid_row_handler=self._malformed,
        )
        convert_options = pa_csv.ConvertOptions(
            column_types={raw_names[name]: pa.binary() for name in include},
            include_columns=[raw_names[name] for name in include],
            strings_can_be_null=False,
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
            raise self._explain(exc, 1) from None
        except UnicodeError as exc:
            raise InputError(f"input is not valid {dialect.encoding}: {exc}") from None
        self._reader = reader
        return reader

    def _raw_header_names(self) -> dict[str, str]:
        return dict(zip(self.header, self._raw_header, strict=True))

    def _explain(self, exc: pa.ArrowInvalid, near_record: int) -> InputError:
        message = str(exc)
        if "straddling" in message or "straddles" in message:
            return InputError(
                f"a record near record {near_record} is larger than the maximum record size of "
                f"{self.dialect.max_record_bytes} bytes (--max-record-bytes); is the file "
                "missing newlines or the quoting broken?"
            )
        return InputError(f"malformed CSV near record {near_record}: {message.splitlines()[0]}")

    def close(self) -> None:
        self._gate.close()
        if self._reader is not None:
            self._reader.close()


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
        quiet: no read in progress and none started for ``QUIET_S``. An Arrow thread calling
        into Python while the interpreter shuts down would abort the process."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            while time.monotonic() < deadline:
                quiet_for = time.monotonic() - self._last_read
                if self._in_flight == 0 and quiet_for >= QUIET_S:
                    return
                self._cond.wait(timeout=QUIET_S)
