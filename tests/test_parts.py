"""Splitting one CSV into parts (``antioom.engine.parts``): what users of queued imports get.

A queued import is cut into byte ranges that separate workers import side by side. What makes
that safe is one contract, checked here for any input: **the parts parse to exactly what one
pass over the whole file parses** — the same values under the same record numbers, the same
malformed records under the same numbers — and the record counts the scan announces per part
are the counts the parts hold. When the scan cannot be sure where records end (an escape
character, comment lines, a quote in mid-field, lone ``\\r`` line ends, an unclosed quote, an
encoding that does not keep ASCII bytes, a small input), the plan is one part covering the
whole file, and it says why.

Small scan chunks are used in the property tests (``SCAN_CHUNK`` patched to a few bytes) so
that every chunk-boundary case the 8 MiB chunks meet in a big file is met in a tiny one.
"""

from __future__ import annotations

import codecs
import io
import itertools
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pytest
from conftest import fetch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antioom.engine import parts as parts_module
from antioom.engine.datasets import Column, Dataset
from antioom.engine.parts import SCAN_CHUNK, Part, Plan, Scan, Scanning, plan
from antioom.engine.pipeline import Options, Target, resolve_dataset, run_import
from antioom.engine.progress import Summary
from antioom.engine.records import CsvRecords, Dialect
from antioom.engine.rejects import Reject
from antioom.engine.source import CountingReader, Readable
from antioom.sinks import open_sink

# --------------------------------------------------------------------------- helpers


@dataclass
class Parsed:
    """What a parse yields: each parsed row under its record number, and the malformed
    records (wrong number of fields) with their reasons."""

    rows: list[tuple[int, tuple[bytes | None, ...]]]
    malformed: list[tuple[int, str]]

    @property
    def records(self) -> int:
        return len(self.rows) + len(self.malformed)


def parse(data: bytes, dialect: Dialect, first_record: int = 1) -> Parsed:
    """Parse ``data`` as an import would, collecting every row and every malformed record."""
    records = CsvRecords(io.BytesIO(data), dialect, first_record=first_record)
    rows: list[tuple[int, tuple[bytes | None, ...]]] = []
    malformed: list[tuple[int, str]] = []
    try:
        for block in records.blocks(list(records.header)):
            columns = [column.to_pylist() for column in block.batch.columns]
            for i in range(block.batch.num_rows):
                rows.append((block.record_number(i), tuple(column[i] for column in columns)))
            malformed += [(reject.record, reject.reason) for reject in block.malformed]
    finally:
        records.close()
    return Parsed(rows, malformed)


def opener(data: bytes, reads: list[int] | None = None) -> Callable[[int, int | None], Readable]:
    """``open_range`` over bytes in memory; the size of every read is appended to ``reads``."""

    class Range(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            chunk = super().read(size)
            if reads is not None:
                reads.append(len(chunk))
            return chunk

    def open_range(start: int, end: int | None) -> Readable:
        return Range(data[start:end])

    return open_range


def plan_of(data: bytes, dialect: Dialect, parts: int) -> Plan:
    return plan(opener(data), len(data), dialect, parts, min_part_bytes=1)


def parse_parts(data: bytes, found: Plan) -> list[Parsed]:
    """Each part of ``found`` parsed on its own, as a worker parses it."""
    return [
        parse(data[part.start : part.end], found.dialect, part.first_record) for part in found.parts
    ]


def assert_parts_agree(data: bytes, dialect: Dialect, found: Plan) -> Parsed:
    """The contract: the parts of ``found`` parse to what one pass over ``data`` parses, the
    parts tile the input, and the scan's counts are the parsed ones. Returns the single pass."""
    whole = parse(data, dialect)
    pieces = parse_parts(data, found)
    assert [row for piece in pieces for row in piece.rows] == whole.rows
    assert [bad for piece in pieces for bad in piece.malformed] == whole.malformed

    parts = found.parts
    assert [part.index for part in parts] == list(range(len(parts)))
    assert {part.count for part in parts} == {len(parts)}
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    assert all(part.start < part.end for part in parts) or data == b""
    assert parts[-1].end == len(data)
    if found.why_one_part is not None:  # not split: the whole input, parsed as given
        assert len(parts) == 1
        assert (parts[0].start, parts[0].first_record, parts[0].records) == (0, 1, 0)
        assert found.records is None
        return whole
    assert parts[0].first_record == 1
    assert found.records == sum(part.records for part in parts) == whole.records
    next_record = 1
    for part, piece in zip(parts, pieces, strict=True):
        assert part.first_record == next_record
        assert piece.records == part.records  # what a worker checks after its part
        numbers = [number for number, _ in piece.rows] + [n for n, _ in piece.malformed]
        assert all(part.first_record <= n < part.first_record + part.records for n in numbers)
        next_record += part.records
    return whole


@contextmanager
def scan_chunk(size: int | None) -> Iterator[None]:
    """Scan in chunks of ``size`` bytes (None: the real 8 MiB)."""
    with ExitStack() as stack:
        if size is not None:
            stack.enter_context(mock.patch.object(parts_module, "SCAN_CHUNK", size))
        yield


# --------------------------------------------------------------------------- messy CSVs

PLAIN = "abcxyz0189 é漢字"
PLAIN_LATIN = "abcxyz0189 éàÿ"
PLAIN_CP1252 = "abcxyz0189 é€\u201aŸ"  # the euro sign, low-9 quote and Ÿ: 0x80 0x82 0x9f


@dataclass(frozen=True)
class Messy:
    """A generated CSV (bytes) and how it was written."""

    data: bytes
    width: int
    delimiter: str
    eol: str

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"Messy(data={self.data!r})"


@st.composite
def messy_csvs(
    draw: st.DrawFn,
    *,
    width: st.SearchStrategy[int] | None = None,
    alphabet: str = PLAIN,
    encoding: str = "utf-8",
) -> Messy:
    """A header and rows mixing plain values, quoted ones holding delimiters, line breaks,
    doubled quotes or nothing, blank (or space-only) lines, rows with too few or too many
    fields; with or without a BOM, preamble lines, a trailing line end; ``,`` ``;`` or tab;
    LF or CRLF."""
    columns = draw(width if width is not None else st.integers(1, 5))
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    plain = st.text(alphabet, max_size=6)
    pieces = st.sampled_from(["a", alphabet[-1], " ", delimiter, "\n", "\r\n", "\r", '""', "9"])
    quoted = st.lists(pieces, max_size=5).map(lambda p: '"' + "".join(p) + '"')
    value = st.one_of(plain, quoted)

    def record(count: int) -> str:
        return delimiter.join(draw(st.lists(value, min_size=count, max_size=count)))

    lines = [delimiter.join(f"c{i}{alphabet[-1] * (i % 2)}" for i in range(columns))]
    if columns > 1 and draw(st.booleans()):
        preamble = draw(
            st.lists(st.sampled_from(["Exported 2024-05-01", "Sales report"]), max_size=2)
        )
        lines = preamble + lines
    kinds = st.sampled_from(["row"] * 6 + ["blank", "short", "long"])
    for kind in draw(st.lists(kinds, max_size=25)):
        if kind == "blank":  # skipped by Arrow in a file of several columns; " " is a record
            lines.append(draw(st.sampled_from(["", "", " "])))
        elif kind == "short" and columns > 1:
            lines.append(record(draw(st.integers(1, columns - 1))))
        elif kind == "long":
            lines.append(record(columns + draw(st.integers(1, 2))))
        else:
            lines.append(record(columns))
    text = eol.join(lines) + (eol if draw(st.booleans()) else "")
    bom = codecs.BOM_UTF8 if encoding == "utf-8" and draw(st.booleans()) else b""
    return Messy(bom + text.encode(encoding), columns, delimiter, eol)


# --------------------------------------------------------------------------- 1. the contract

CHUNKS = st.one_of(st.none(), st.integers(1, 48))  # scan chunk sizes: tiny, or the real one
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(csv=messy_csvs(), parts=st.integers(1, 8), chunk=CHUNKS)
def test_parts_parse_to_exactly_what_one_pass_parses(
    csv: Messy, parts: int, chunk: int | None
) -> None:
    """Whatever the CSV holds — quoted delimiters and line breaks, doubled quotes, blank
    lines, rows of the wrong width, non-ASCII text, a BOM, preamble lines, ``;`` or tab,
    CRLF — importing it in parts gives the rows and rejects, under the same record numbers,
    that one import of the whole file gives; and each part holds the records it announces."""
    with scan_chunk(chunk):
        found = plan_of(csv.data, Dialect(), parts)
        assert_parts_agree(csv.data, Dialect(), found)


@settings(PROPERTY, max_examples=80)
@given(csv=messy_csvs(width=st.just(1)), parts=st.integers(2, 8), chunk=CHUNKS)
def test_one_column_files_count_blank_lines_as_records(
    csv: Messy, parts: int, chunk: int | None
) -> None:
    """In a one-column file a blank line is a record (a NULL value), not a line to skip: the
    parts count and number them as one pass does."""
    with scan_chunk(chunk):
        found = plan_of(csv.data, Dialect(), parts)
        assert_parts_agree(csv.data, Dialect(), found)


@settings(PROPERTY, max_examples=80)
@given(
    csv=st.one_of(
        messy_csvs(alphabet=PLAIN_LATIN, encoding="latin-1").map(lambda c: (c, "latin-1")),
        messy_csvs(alphabet=PLAIN_CP1252, encoding="cp1252").map(lambda c: (c, "cp1252")),
    ),
    parts=st.integers(2, 8),
    chunk=CHUNKS,
)
def test_single_byte_encodings_split_as_exactly(
    csv: tuple[Messy, str], parts: int, chunk: int | None
) -> None:
    """latin-1 and cp1252 keep ASCII bytes as they are, so their files are split too (the
    byte offsets are the file's own, not its UTF-8 translation's), with the same result."""
    messy, encoding = csv
    dialect = Dialect(encoding=encoding)
    with scan_chunk(chunk):
        found = plan_of(messy.data, dialect, parts)
        assert_parts_agree(messy.data, dialect, found)


def test_a_plain_file_is_split_where_asked() -> None:
    """A regular file is cut into the number of parts asked for, each starting on a record,
    the first right after the header."""
    data = b"id,name\n" + b"".join(b'%d,"n %d\nx"\n' % (i, i) for i in range(1000))
    with scan_chunk(None):
        found = plan_of(data, Dialect(), 4)
        whole = assert_parts_agree(data, Dialect(), found)
    assert len(found.parts) == 4
    assert found.parts[0].start == len(b"id,name\n")
    assert found.records == whole.records == 1000
    assert found.dialect.columns == ("id", "name") and found.dialect.header is False


# --------------------------------------------------------------------------- 2. one part

ROWS = b"".join(b'%d,"name %d, \xc3\xa9",%d.5\n' % (i, i, i) for i in range(3000))  # ~90 KB
HEADER = b"id,name,price\n"
FALLBACKS = {
    # cause: (input, dialect, what why_one_part says)
    "escape character": (
        HEADER + ROWS + b'9,"a \\"quoted\\" word",1\n',
        Dialect(escape_char="\\"),
        "escape character",
    ),
    "UTF-16 (BOM)": (
        (HEADER + ROWS).decode().encode("utf-16"),
        Dialect(),
        "utf-16 encoding does not keep ASCII bytes",
    ),
    "UTF-16 (no BOM)": (
        (HEADER + ROWS).decode().encode("utf-16-le"),
        Dialect(),
        "utf-16-le encoding does not keep ASCII bytes",
    ),
    "Shift JIS": (
        (HEADER + ROWS).decode().replace("é", "表").encode("shift_jis"),  # 表 is 0x95 0x5C
        Dialect(encoding="shift_jis"),
        "shift_jis encoding does not keep ASCII bytes",
    ),
    "quote in mid-field": (
        HEADER + ROWS + b'9,5" screen,1\n' + ROWS,
        Dialect(),
        "a quote opens a value in mid-field",
    ),
    "text after a closing quote": (
        HEADER + ROWS + b'9,"5" screen,1\n' + ROWS,
        Dialect(),
        "a quote is followed by text before the delimiter",
    ),
    "lone CR line ends": (
        (HEADER + ROWS).replace(b"\n", b"\r"),
        Dialect(),
        "a line ends in \\r alone",
    ),
    "one lone CR deep in the file": (
        HEADER + ROWS + b"9,x,1\r9,y,2\n" + ROWS,
        Dialect(),
        "a line ends in \\r alone",
    ),
    "unclosed quote": (
        HEADER + ROWS + b'9,"never closed,1\n9,y,2\n',
        Dialect(),
        "a quoted value is not closed at the end of the input",
    ),
    "too small": (HEADER + ROWS, None, "smaller than 4 parts of 16 MiB"),
    "empty": (b"", Dialect(), "the input is empty"),
}


@pytest.mark.parametrize("cause", FALLBACKS)
def test_an_input_that_cannot_be_split_safely_is_one_exact_part(cause: str) -> None:
    """When counting quotes cannot find record ends for sure, the import is not split: one
    part, byte 0 to the end, parsed with the dialect as given (so it reads its own header),
    with the reason in ``why_one_part`` — and it imports exactly what one pass imports."""
    data, dialect, why = FALLBACKS[cause]
    with scan_chunk(None):
        if dialect is None:  # the real minimum part size
            found = plan(opener(data), len(data), Dialect(), 4)
            dialect = Dialect()
        else:
            found = plan_of(data, dialect, 4)
        assert found.why_one_part is not None and why in found.why_one_part
        assert found.dialect == dialect
        assert [(p.start, p.end, p.first_record) for p in found.parts] == [(0, len(data), 1)]
        assert_parts_agree(data, dialect, found)


# --------------------------------------------------------------------------- scanned while staged


def scanned_while_read(data: bytes, dialect: Dialect, reads: list[int]) -> Scan | None:
    """Pass ``data`` through a :class:`Scanning` reader in reads of the given sizes (cycled),
    as staging does, and return what it found; the bytes passed on must be ``data``."""
    scanning = Scanning(io.BytesIO(data), dialect)
    passed = bytearray()
    for size in itertools.cycle(reads):
        chunk = scanning.read(size)
        passed += chunk
        if not chunk:
            break
    assert bytes(passed) == data
    return scanning.scan()


@PROPERTY
@given(
    csv=messy_csvs(),
    parts=st.integers(2, 8),
    chunk=st.integers(1, 48),
    checkpoint=st.integers(1, 64),
    reads=st.lists(st.integers(1, 200), min_size=1, max_size=4),
)
def test_parts_cut_at_the_boundaries_found_while_staging_parse_as_one_pass(
    csv: Messy, parts: int, chunk: int, checkpoint: int, reads: list[int]
) -> None:
    """The boundaries a staged input was scanned for as it went by (in reads of any size)
    cut it into parts that parse to exactly what one pass parses, with the same record
    count a scan of the staged bytes finds."""
    with (
        scan_chunk(chunk),
        mock.patch.object(parts_module, "CHECKPOINT_BYTES", checkpoint),
    ):
        scan = scanned_while_read(csv.data, Dialect(), reads)
        again = plan_of(csv.data, Dialect(), parts)
        found = plan(
            opener(csv.data), len(csv.data), Dialect(), parts, min_part_bytes=1, scanned=scan
        )
        assert found.records == again.records
        assert (found.why_one_part is None) == (again.why_one_part is None)
        assert_parts_agree(csv.data, Dialect(), found)


@pytest.mark.parametrize("cause", [c for c in FALLBACKS if c not in ("too small", "empty")])
def test_what_cannot_be_split_is_found_out_while_staging_too(cause: str) -> None:
    """An input that counting quotes cannot split is one part whether or not it was scanned
    while staged (the scan either declines or reports the irregular quote or line end)."""
    data, dialect, why = FALLBACKS[cause]
    assert dialect is not None
    with scan_chunk(None):
        scan = scanned_while_read(data, dialect, [1 << 20])
        found = plan(opener(data), len(data), dialect, 4, min_part_bytes=1, scanned=scan)
    assert found.why_one_part is not None and why in found.why_one_part
    assert [(p.start, p.end) for p in found.parts] == [(0, len(data))]


def test_a_scan_of_other_bytes_is_not_used() -> None:
    """A scan made for other bytes (here: the input before rows were added) is ignored: the
    plan scans again, and its parts are exact."""
    data = HEADER + ROWS * 4
    with scan_chunk(None):
        stale = scanned_while_read(HEADER + ROWS * 2, Dialect(), [4096])
        assert stale is not None
        found = plan_of_scanned(data, stale)
    assert len(found.parts) == 4
    assert_parts_agree(data, Dialect(), found)


def plan_of_scanned(data: bytes, scan: Scan) -> Plan:
    return plan(opener(data), len(data), Dialect(), 4, min_part_bytes=1, scanned=scan)


def test_a_plan_from_the_staging_scan_reads_only_the_head() -> None:
    """With the boundaries found while staging, planning reads the head, not the data."""
    data = HEADER + UNIT * ((24 << 20) // len(UNIT) + 1)
    with scan_chunk(None):
        scan = scanned_while_read(data, Dialect(), [1 << 20])
        reads: list[int] = []
        found = plan(opener(data, reads), len(data), Dialect(), 4, min_part_bytes=1, scanned=scan)
    assert len(found.parts) == 4
    assert sum(reads) <= 2 << 20, f"{sum(reads)} bytes read to plan {len(data)}"
    assert found.records == (len(data) - len(HEADER)) // len(UNIT) * UNIT_ROWS


def test_scanning_while_staging_holds_about_one_chunk() -> None:
    """However big the input, the scanning reader holds at most the head, or one scan chunk
    plus one read, of Python memory beyond the read it passes on."""
    copies = (48 << 20) // len(UNIT) + 1
    source = io.BytesIO(HEADER + UNIT * copies)
    scanning = Scanning(source, Dialect())
    tracemalloc.start()
    try:
        while chunk := scanning.read(1 << 20):
            del chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    scan = scanning.scan()
    assert scan is not None and scan.records == copies * UNIT_ROWS
    assert peak < 3 * SCAN_CHUNK, f"{peak / 2**20:.1f} MiB held while scanning 48 MiB"


COMMENTED = HEADER + ROWS + b"# a comment line\n" + ROWS


def test_comment_lines_make_one_exact_part() -> None:
    """Comment lines are dropped before parsing, so byte offsets no longer match records:
    one part, parsed as one pass parses it."""
    with scan_chunk(None):
        found = plan_of(COMMENTED, Dialect(comment="#"), 4)
        assert [(p.start, p.end) for p in found.parts] == [(0, len(COMMENTED))]
        assert found.why_one_part is not None
        whole = assert_parts_agree(COMMENTED, Dialect(comment="#"), found)
    assert whole.records == 6000


def test_the_reason_for_one_part_names_comment_lines() -> None:
    """The note a queued import gets ("imported in one part: …") names comment lines."""
    found = plan_of(COMMENTED, Dialect(comment="#"), 4)
    assert "comment" in (found.why_one_part or "")


# --------------------------------------------------------------------------- known bugs


@pytest.mark.parametrize(
    "data, encoding",
    [
        (codecs.BOM_UTF8 + b"a,b\n1,2\n3,4\n5,6\n", "latin-1"),
        (codecs.BOM_UTF8 + b"a,b\n1,2\n3,4\n5,6\n", "cp1252"),
        (codecs.BOM_UTF8 + b"a,b\n1,2\n3,4\n5,6\n", "utf-8-sig"),
        (b"a,b\n1,2\n3,4\n5,6\n", "utf-8-sig"),
    ],
)
def test_parts_start_after_the_header_whatever_the_declared_encoding(
    data: bytes, encoding: str
) -> None:
    """A file declared latin-1/cp1252 that starts with a UTF-8 BOM, or declared utf-8-sig,
    is split right after its header: no record is lost or renumbered."""
    dialect = Dialect(encoding=encoding)
    with scan_chunk(None):
        found = plan_of(data, dialect, 4)
        assert found.parts[0].start == data.index(b"1,2")
        assert_parts_agree(data, dialect, found)


def test_a_closing_quote_at_the_end_of_a_chunk_does_not_stop_the_split() -> None:
    """Where the scan's chunks happen to end does not decide whether a well-formed file is
    split (chunks of 4 bytes here; the same happens at 8 MiB when a quoted value closes on
    a chunk's last byte and the next 8 MiB hold no quote)."""
    data = b'a,b\n"ab",cdefg\n1,2\n'  # chunks: '"ab"' | ',cde' | 'fg\n1' | ...
    with scan_chunk(4):
        found = plan_of(data, Dialect(), 2)
    assert found.why_one_part is None
    assert len(found.parts) == 2


# --------------------------------------------------------------------------- 3. flat memory

UNIT_ROWS = 6000
_UNIT = [
    b'%d,"Name %d, size ""L""\nsecond line",%d.5\n' % (i, i, i)
    if i % 3 == 0
    else b"%d,n%d,%d\n" % (i, i, i)
    for i in range(UNIT_ROWS)
]
UNIT = b"".join(_UNIT)  # a block of rows repeated to make a big file
UNIT_STARTS = {  # offset in UNIT -> row, for every record start
    offset: row for row, offset in enumerate(itertools.accumulate(map(len, _UNIT[:-1]), initial=0))
}


def test_the_scan_reads_in_bounded_chunks_and_keeps_memory_flat(tmp_path: Path) -> None:
    """Planning a 64 MB file holds about one scan chunk at a time, whatever the file's size:
    Python memory stays under 3 chunks, Arrow's under 6 (well below the file), every read
    through ``open_range`` is at most one chunk, and the file is read once. The parts it
    finds start exactly on records, numbered as the file numbers them."""
    path = tmp_path / "big.csv"
    header = b"id,name,price\n"
    copies = (64 << 20) // len(UNIT) + 1
    with path.open("wb") as out:
        out.write(header)
        for _ in range(copies):
            out.write(UNIT)
    size = path.stat().st_size
    reads: list[int] = []
    handles: list[Any] = []

    class FileRange:
        def __init__(self, start: int, end: int | None) -> None:
            self.file = path.open("rb")
            self.file.seek(start)
            self.left = (end if end is not None else size) - start
            handles.append(self.file)

        def read(self, size: int = -1, /) -> bytes:
            data = self.file.read(self.left if size < 0 else min(size, self.left))
            self.left -= len(data)
            reads.append(len(data))
            return data

        def close(self) -> None:
            self.file.close()

    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        found = plan(FileRange, size, Dialect(), 8, min_part_bytes=1 << 20)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(previous)
        for handle in handles:
            handle.close()

    head = 1 << 20  # the sample the dialect and header are read from, and its buffers
    assert python_peak < 3 * SCAN_CHUNK + head, f"Python peak {python_peak >> 20} MiB"
    assert pool.max_memory() < 6 * SCAN_CHUNK, f"Arrow peak {pool.max_memory() >> 20} MiB"
    assert max(reads) <= SCAN_CHUNK
    assert sum(reads) <= size + head  # the head, then the data once

    assert found.why_one_part is None and len(found.parts) == 8
    assert found.records == copies * UNIT_ROWS
    assert found.parts[0].start == len(header)
    for part in found.parts:
        copy, offset = divmod(part.start - len(header), len(UNIT))
        assert offset in UNIT_STARTS, f"part {part.index} starts inside a record"
        assert part.first_record == copy * UNIT_ROWS + UNIT_STARTS[offset] + 1


# --------------------------------------------------------------------------- 4. end to end

PRODUCTS = Dataset(
    name="parts_products",
    table="parts_products",
    columns=(
        Column(name="sku", required=True),
        Column(name="name", required=True),
        Column(name="price", type="float", required=True, gt=Decimal(0)),
    ),
)  # insert mode, no key: the kind of import that is split


@dataclass(frozen=True)
class Products:
    data: bytes
    valid: int  # records that pass validation
    rejected: frozenset[int]  # record numbers rejected (validation or field count)


@pytest.fixture(scope="module")
def products() -> Products:
    """~5 MB of products: quoted names with commas, doubled quotes and line breaks, and
    records rejected for a price that is no number or not > 0, a missing sku, or an extra
    field."""
    lines = [b"sku,name,price\n"]
    rejected = set()
    rows = 130_000
    for i in range(1, rows + 1):
        sku, price = b"SKU-%d" % i, b"%d.25" % (i % 997 + 1)
        name = b'"Name %d\nline two"' % i if i % 7 == 0 else b'"Name %d, size ""L"""' % i
        extra = b""
        if i % 101 == 0:
            price = b"n/a"
        elif i % 211 == 0:
            price = b"-3"
        elif i % 307 == 0:
            sku = b""
        elif i % 401 == 0:
            extra = b",surplus"
        else:
            lines.append(b"%s,%s,%s\n" % (sku, name, price))
            continue
        rejected.add(i)
        lines.append(b"%s,%s,%s%s\n" % (sku, name, price, extra))
    return Products(b"".join(lines), rows - len(rejected), frozenset(rejected))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite file, or a fresh PostgreSQL schema (skipped if none is reachable)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'x.db'}"
    return str(request.getfixturevalue("pg_url"))


def import_parts(
    data: bytes, url: str, found: Plan, dataset: Dataset, import_id: str, order: list[Part]
) -> tuple[list[Summary], list[Reject]]:
    """Import ``order``'s parts of ``data`` one after the other, as workers would."""
    summaries: list[Summary] = []
    rejects: list[Reject] = []
    for part in order:
        with open_sink(url) as sink:
            summaries.append(
                run_import(
                    CountingReader(io.BytesIO(data[part.start : part.end])),
                    sink,
                    Target(dataset=dataset),
                    Options(dialect=found.dialect, part=part, import_id=import_id),
                    on_reject=rejects.append,
                )
            )
    return summaries, rejects


def table_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    return fetch(url, f"SELECT sku, name, price FROM {table} ORDER BY sku")


def count(url: str, table: str) -> int:
    return int(fetch(url, f"SELECT count(*) FROM {table}")[0][0])


def reasons(rejects: list[Reject]) -> list[tuple[int, str | None, str]]:
    return sorted((r.record, r.column, r.reason) for r in rejects)


def test_an_import_in_parts_writes_what_one_import_writes(products: Products, db_url: str) -> None:
    """Importing a file in parts — each by its own ``run_import``, in reverse order, under
    one import id — fills the table with exactly the rows one plain import writes, and
    reports the same rejects under the same record numbers."""
    data = products.data
    plain_rejects: list[Reject] = []
    with open_sink(db_url) as sink:
        plain = run_import(
            CountingReader(io.BytesIO(data)),
            sink,
            Target(dataset=PRODUCTS, table="whole"),
            Options(import_id=f"whole-{uuid.uuid4().hex}"),
            on_reject=plain_rejects.append,
        )
    assert (plain.status, plain.processed, plain.failed) == (
        "completed",
        products.valid,
        len(products.rejected),
    )
    assert {r.record for r in plain_rejects} == products.rejected

    found = plan(opener(data), len(data), Dialect(), 4, min_part_bytes=1 << 20)
    assert found.why_one_part is None and len(found.parts) == 4
    first = found.parts[0]
    dataset = resolve_dataset(
        io.BytesIO(data[first.start : first.end]),
        Target(dataset=PRODUCTS, table="split"),
        found.dialect,
    )
    split_id = f"split-{uuid.uuid4().hex}"
    summaries, split_rejects = import_parts(
        data, db_url, found, dataset, split_id, found.parts[::-1]
    )

    assert all(s.status == "completed" for s in summaries)
    for part, summary in zip(found.parts[::-1], summaries, strict=True):
        assert summary.rows == part.records  # what a worker checks before closing a part
    assert sum(s.processed for s in summaries) == plain.processed
    assert sum(s.failed for s in summaries) == plain.failed
    assert reasons(split_rejects) == reasons(plain_rejects)
    with open_sink(db_url) as sink:
        ledger = sink.committed(split_id)  # all the parts' batches
    assert (ledger.records, ledger.committed_rows) == (found.records, plain.processed)
    assert ledger.rejected == plain.failed
    assert table_rows(db_url, "split") == table_rows(db_url, "whole")
    assert count(db_url, "split") == products.valid


class Crash(Exception):
    """The worker dies (after some batches have committed)."""


def test_a_part_resumes_where_it_stopped_and_writes_nothing_twice(
    products: Products, db_url: str
) -> None:
    """A part whose worker died after two batches is run again under the same import id: it
    goes on after the last committed record, so the table ends with each of the part's valid
    rows once, the ledger accounts for every record of the part, and running the finished
    part yet again writes nothing."""
    data = products.data
    found = plan(opener(data), len(data), Dialect(), 4, min_part_bytes=1 << 20)
    part = found.parts[1]
    table = f"resumed_{uuid.uuid4().hex[:8]}"
    dataset = PRODUCTS.with_options(table=table)
    import_id = f"resume-{uuid.uuid4().hex}"
    source = CountingReader(io.BytesIO(data[part.start : part.end]))
    options = Options(dialect=found.dialect, part=part, import_id=import_id, batch_size=1000)
    in_part = range(part.first_record, part.first_record + part.records)
    expected_rejects = sorted(r for r in products.rejected if r in in_part)

    progress: list[Any] = []

    def die_after_two_batches(event: Any) -> None:
        progress.append(event)
        if len(progress) == 3:  # the start, then two batches
            raise Crash

    first_rejects: list[Reject] = []
    with open_sink(db_url) as sink, pytest.raises(Crash):
        run_import(
            source,
            sink,
            Target(dataset=dataset),
            options,
            on_progress=die_after_two_batches,
            on_reject=first_rejects.append,
        )
    with open_sink(db_url) as sink:
        crashed = sink.committed(import_id, part.seqs)
    assert crashed.batches == 2
    assert part.first_record < crashed.end_record < in_part[-1]
    assert count(db_url, table) == crashed.committed_rows > 0
    assert crashed.records == crashed.end_record - part.first_record + 1

    resumed_rejects: list[Reject] = []
    with open_sink(db_url) as sink:
        resumed = run_import(
            CountingReader(io.BytesIO(data[part.start : part.end])),
            sink,
            Target(dataset=dataset),
            options,
            on_reject=resumed_rejects.append,
        )
        done = sink.committed(import_id, part.seqs)
    assert resumed.resumed_from == {
        "records": crashed.records,
        "rows": crashed.committed_rows,
        "rejected": crashed.rejected,
        "batches": 2,
    }
    assert resumed.rows == part.records == done.records
    valid_in_part = part.records - len(expected_rejects)
    assert count(db_url, table) == done.committed_rows == resumed.processed == valid_in_part
    assert done.end_record == in_part[-1]
    assert all(r.record > crashed.end_record for r in resumed_rejects)
    reported = [r.record for r in first_rejects if r.record <= crashed.end_record]
    assert sorted(reported + [r.record for r in resumed_rejects]) == expected_rejects

    again_rejects: list[Reject] = []
    with open_sink(db_url) as sink:
        again = run_import(
            CountingReader(io.BytesIO(data[part.start : part.end])),
            sink,
            Target(dataset=dataset),
            options,
            on_reject=again_rejects.append,
        )
        after = sink.committed(import_id, part.seqs)
    assert count(db_url, table) == valid_in_part  # nothing written twice
    assert after == done
    assert (again.processed, again.rows) == (valid_in_part, part.records)
    assert again_rejects == []
