"""Synthetic products CSV generator (the seed's ``scripts/generate-csv.ts``, only much faster).

Rows look like ``SKU-{i},Product Name {i},{price}`` with ``i`` counting from 1 and the price
uniform in 1.00..1001.00 with two decimals, exactly as the seed produced them.  Optionally a
fraction of the rows is made invalid so the validation and error reporting paths get exercised.

Why pyarrow.compute and not a Python loop: formatting rows one at a time in Python tops out
around 20-30 MB/s, while building ~50k rows per call with Arrow string kernels reaches well over
100 MB/s.  pyarrow is already a runtime dependency, numpy is not, so numpy is not used here.

Randomness comes from :class:`random.Random` (``randbytes``, 4 bytes per row) so the output is a
pure function of ``seed`` and independent of the chunk size: a file of N rows is a prefix of a
file of N + M rows generated with the same seed and invalid ratio.
"""

from __future__ import annotations

import gzip
import random
import sys
from dataclasses import dataclass
from typing import BinaryIO, cast

import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"sku,name,price\n"
CHUNK_ROWS = 50_000
"""Rows built per Arrow call: large enough to amortise call overhead, small enough (~2 MB of
text) to keep memory flat and well inside the int32 offsets of an Arrow string array."""

PRICE_CENTS_MIN = 100  # 1.00
PRICE_CENTS_SPAN = 100_001  # 1.00 .. 1001.00 inclusive, in cents

INVALID_KINDS = ("empty_sku", "empty_name", "zero_price", "negative_price", "non_numeric_price")
"""Invalid rows cycle through these kinds in order: the k-th invalid row (0-based) has kind
``INVALID_KINDS[k % 5]``.  Each kind breaks exactly one of the seed's validation rules."""

_U32 = 1 << 32
_TYPICAL_ROW_BYTES = 24  # a little under the shortest valid row, "SKU-1,Product Name 1,1.00\n"


@dataclass(frozen=True)
class GenerateStats:
    """What was written: data rows (header excluded), how many are invalid, and total bytes
    (header included, uncompressed)."""

    rows: int
    invalid_rows: int
    bytes: int


def generate_products(
    out: BinaryIO,
    *,
    rows: int | None = None,
    size_bytes: int | None = None,
    invalid_ratio: float = 0.0,
    seed: int = 0,
) -> GenerateStats:
    """Write a products CSV to ``out``, bounded either by ``rows`` or by ``size_bytes``.

    With ``size_bytes`` the file stops before the first row that would make it exceed the bound,
    so it is never larger than ``size_bytes`` and at most one row shorter.  About
    ``invalid_ratio`` of the rows (chosen at random, deterministic from ``seed``) are invalid.
    ``out`` is written in large chunks and is neither flushed nor closed here.
    """
    if (rows is None) == (size_bytes is None):
        raise ValueError("pass exactly one of rows= or size_bytes=")
    if rows is not None and rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if size_bytes is not None and size_bytes < len(HEADER):
        raise ValueError(f"size_bytes must be >= {len(HEADER)} (the header), got {size_bytes}")
    if not 0.0 <= invalid_ratio <= 1.0:
        raise ValueError(f"invalid_ratio must be in [0, 1], got {invalid_ratio}")

    price_rng = random.Random(seed)
    # A separate stream for the invalid-row choice keeps valid rows identical for every ratio.
    invalid_rng = random.Random(f"antioom-invalid-{seed}")
    invalid_threshold = int(invalid_ratio * _U32)  # row is invalid iff its draw < threshold
    base = pa.array(range(CHUNK_ROWS), pa.int64())
    row_limit = rows if rows is not None else sys.maxsize
    byte_limit = size_bytes if size_bytes is not None else sys.maxsize

    out.write(HEADER)
    written_bytes = len(HEADER)
    written_rows = 0
    invalid_rows = 0
    while True:
        # With size_bytes, build only about as many rows as can still fit, so a small bound does
        # not pay for a whole chunk.  Any guess is correct: the loop goes on while every built row
        # fits and stops at the first one that does not.
        n = min(
            CHUNK_ROWS,
            row_limit - written_rows,
            (byte_limit - written_bytes) // _TYPICAL_ROW_BYTES + 1,
        )
        if n <= 0:
            break
        ids = pc.cast(pc.add(base.slice(0, n), written_rows + 1), pa.string())
        price = _prices(price_rng, n)
        if invalid_threshold:
            draws = pc.cast(_draw_u32(invalid_rng, n), pa.int64())
            invalid: pa.Array | None = pc.less(draws, invalid_threshold)
            lines = _lines_with_invalid(ids, price, invalid, invalid_rows)
        else:
            invalid = None
            lines = pc.binary_join_element_wise(
                "SKU-", ids, ",Product Name ", ids, ",", price, "\n", ""
            )

        keep = n
        if size_bytes is not None:
            ends = pc.cumulative_sum(pc.cast(pc.binary_length(lines), pa.int64()))
            keep = pc.sum(pc.less_equal(ends, byte_limit - written_bytes)).as_py() or 0
            lines = lines.slice(0, keep)
            if invalid is not None:
                invalid = invalid.slice(0, keep)
        if keep:
            chunk = _string_data(lines)
            out.write(chunk)
            written_bytes += len(chunk)
            written_rows += keep
            if invalid is not None:
                invalid_rows += pc.sum(pc.cast(invalid, pa.int64())).as_py() or 0
        if keep < n:  # the next row would cross size_bytes
            break
    return GenerateStats(rows=written_rows, invalid_rows=invalid_rows, bytes=written_bytes)


def open_output(path: str) -> BinaryIO:
    """Open ``path`` for writing the generated CSV, compressing by extension.

    ``-`` is standard output (binary), ``*.gz`` gzip, ``*.zst`` zstd (via pyarrow, which ships
    zstd, so no extra dependency), anything else a plain file.  The caller closes it.
    """
    if path == "-":
        return sys.stdout.buffer
    if path.endswith(".gz"):
        # Level 6 (zlib's default) rather than gzip's 9: several times faster, barely larger.
        return cast(BinaryIO, gzip.open(path, "wb", compresslevel=6))
    if path.endswith(".zst"):
        return cast(BinaryIO, pa.CompressedOutputStream(path, "zstd"))
    return open(path, "wb")


def _draw_u32(rng: random.Random, n: int) -> pa.Array:
    """n uniform uint32 values; ``randbytes`` is fast and concatenates across calls."""
    return pa.Array.from_buffers(pa.uint32(), n, [None, pa.py_buffer(rng.randbytes(4 * n))])


def _prices(rng: random.Random, n: int) -> pa.Array:
    """n prices as strings ``D.CC`` uniform over 1.00..1001.00 (integer cents, no float noise)."""
    scaled = pc.shift_right(
        pc.multiply(pc.cast(_draw_u32(rng, n), pa.uint64()), PRICE_CENTS_SPAN), 32
    )
    cents = pc.add(pc.cast(scaled, pa.int64()), PRICE_CENTS_MIN)
    # cents >= 100 always has >= 3 digits, so inserting "." before the last two is enough.
    return pc.binary_replace_slice(pc.cast(cents, pa.string()), -2, -2, ".")


def _lines_with_invalid(
    ids: pa.Array, price: pa.Array, invalid: pa.Array, invalid_before: int
) -> pa.Array:
    """Build lines where rows flagged in ``invalid`` get the next kinds of INVALID_KINDS.

    ``invalid_before`` (invalid rows in earlier chunks) keeps the kind cycle continuous across
    chunks.  Slower than the all-valid path, which is fine: it is only used for test data.
    """
    ordinal = pc.add(pc.cumulative_sum(pc.cast(invalid, pa.int64())), invalid_before - 1)
    n_kinds = len(INVALID_KINDS)
    kind = pc.subtract(ordinal, pc.multiply(pc.divide(ordinal, n_kinds), n_kinds))

    def is_kind(k: int) -> pa.Array:
        return pc.and_(invalid, pc.equal(kind, k))

    sku = pc.if_else(is_kind(0), "", pc.binary_join_element_wise("SKU-", ids, ""))
    name = pc.if_else(is_kind(1), "", pc.binary_join_element_wise("Product Name ", ids, ""))
    price = pc.if_else(is_kind(2), "0.00", price)
    price = pc.if_else(is_kind(3), pc.binary_join_element_wise("-", price, ""), price)
    price = pc.if_else(is_kind(4), "abc", price)
    return pc.binary_join_element_wise(sku, ",", name, ",", price, "\n", "")


def _string_data(lines: pa.Array) -> memoryview:
    """The concatenated UTF-8 bytes of a string array, without copying.

    Every element ends in a newline, so the array's data buffer between its first and last
    offsets is exactly the CSV text to write.
    """
    offsets_buf, data_buf = lines.buffers()[1:3]
    offsets = pa.Array.from_buffers(pa.int32(), len(lines) + 1, [None, offsets_buf], lines.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    if data_buf is None:  # an empty array may have no data buffer at all
        return memoryview(b"")
    return memoryview(data_buf)[start:end]
