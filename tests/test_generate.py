"""Tests for the products CSV generator (antioom.generate)."""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antioom import generate
from antioom.generate import HEADER, GenerateStats, generate_products, open_output

PRICE_RE = re.compile(r"^\d+\.\d\d$")


def _generate(**kwargs: object) -> tuple[bytes, GenerateStats]:
    buf = io.BytesIO()
    stats = generate_products(buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue(), stats


def _rows(data: bytes) -> list[list[str]]:
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    assert next(reader) == ["sku", "name", "price"]
    return list(reader)


def _is_valid(row: list[str]) -> bool:
    """The seed's rules: sku non-empty after trim, name non-empty, price a number > 0."""
    sku, name, price = (field.strip() for field in row)
    try:
        value = float(price)
    except ValueError:
        return False
    return bool(sku) and bool(name) and math.isfinite(value) and value > 0


def test_rows_header_and_format() -> None:
    data, stats = _generate(rows=1000, seed=1)
    assert data.startswith(b"sku,name,price\n")
    assert data.endswith(b"\n")
    rows = _rows(data)
    assert stats == GenerateStats(rows=1000, invalid_rows=0, bytes=len(data))
    assert len(rows) == 1000
    for i, (sku, name, price) in enumerate(rows, start=1):
        assert sku == f"SKU-{i}"
        assert name == f"Product Name {i}"
        assert PRICE_RE.match(price), price
        assert 1.0 <= float(price) <= 1001.0


def test_prices_spread_over_range() -> None:
    data, _ = _generate(rows=20_000, seed=3)
    prices = [float(row[2]) for row in _rows(data)]
    assert min(prices) < 10.0
    assert max(prices) > 990.0
    assert 450.0 < sum(prices) / len(prices) < 550.0
    assert len(set(prices)) > 15_000  # two decimals, not rounded to whole numbers


def test_zero_rows_is_header_only() -> None:
    data, stats = _generate(rows=0)
    assert data == HEADER
    assert stats == GenerateStats(rows=0, invalid_rows=0, bytes=len(HEADER))


@pytest.mark.parametrize("size", [len(HEADER), len(HEADER) + 1, 100, 4096, 123_457])
def test_size_bound(size: int) -> None:
    data, stats = _generate(size_bytes=size, seed=2)
    assert len(data) == stats.bytes <= size
    rows = _rows(data)
    assert len(rows) == stats.rows
    # Stopped at the first row that did not fit: the next row would have crossed the bound.
    next_line = f"SKU-{stats.rows + 1},Product Name {stats.rows + 1},1.00\n".encode()
    assert len(data) + len(next_line) > size


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"rows": 10, "size_bytes": 100},
        {"rows": -1},
        {"size_bytes": len(HEADER) - 1},
        {"rows": 10, "invalid_ratio": -0.1},
        {"rows": 10, "invalid_ratio": 1.5},
        {"rows": 10, "invalid_ratio": math.nan},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _generate(**kwargs)


def test_invalid_ratio_roughly_honoured_and_rows_really_invalid() -> None:
    data, stats = _generate(rows=20_000, invalid_ratio=0.1, seed=7)
    rows = _rows(data)
    invalid = [row for row in rows if not _is_valid(row)]
    assert len(invalid) == stats.invalid_rows
    assert 1_700 <= stats.invalid_rows <= 2_300
    kinds = Counter(_kind(row) for row in invalid)
    assert set(kinds) == set(generate.INVALID_KINDS)
    # Kinds cycle, so they are balanced to within one.
    assert max(kinds.values()) - min(kinds.values()) <= 1


def test_invalid_kinds_cycle_in_order() -> None:
    data, stats = _generate(rows=50, invalid_ratio=1.0)
    rows = _rows(data)
    assert stats.invalid_rows == 50
    assert [_kind(row) for row in rows[:10]] == list(generate.INVALID_KINDS) * 2
    assert not any(_is_valid(row) for row in rows)


def test_valid_rows_unchanged_by_invalid_ratio() -> None:
    clean = _rows(_generate(rows=2_000, seed=5)[0])
    dirty = _rows(_generate(rows=2_000, seed=5, invalid_ratio=0.3)[0])
    for a, b in zip(clean, dirty, strict=True):
        if _is_valid(b):
            assert a == b


def _kind(row: list[str]) -> str:
    sku, name, price = row
    if not sku:
        return "empty_sku"
    if not name:
        return "empty_name"
    if price == "0.00":
        return "zero_price"
    if price.startswith("-"):
        return "negative_price"
    assert price == "abc", row
    return "non_numeric_price"


def test_deterministic_by_seed() -> None:
    a, _ = _generate(rows=5_000, seed=42, invalid_ratio=0.05)
    b, _ = _generate(rows=5_000, seed=42, invalid_ratio=0.05)
    c, _ = _generate(rows=5_000, seed=43, invalid_ratio=0.05)
    assert a == b
    assert a != c


def test_shorter_file_is_prefix_of_longer() -> None:
    short, _ = _generate(rows=1_234, seed=9, invalid_ratio=0.2)
    long, _ = _generate(rows=3_000, seed=9, invalid_ratio=0.2)
    assert long.startswith(short)


def test_output_independent_of_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk boundaries (ids, random streams, invalid-kind cycle, size cut) leave no trace."""
    expected_rows = _generate(rows=500, seed=11, invalid_ratio=0.3)
    expected_size = _generate(size_bytes=9_999, seed=11, invalid_ratio=0.3)
    monkeypatch.setattr(generate, "CHUNK_ROWS", 7)
    assert _generate(rows=500, seed=11, invalid_ratio=0.3) == expected_rows
    assert _generate(size_bytes=9_999, seed=11, invalid_ratio=0.3) == expected_size


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=len(HEADER), max_value=20_000),
    ratio=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_size_bound_property(size: int, ratio: float, seed: int) -> None:
    data, stats = _generate(size_bytes=size, invalid_ratio=ratio, seed=seed)
    assert len(data) == stats.bytes <= size
    assert size - len(data) < 64  # a row is ~30-60 bytes: the file is close to the bound
    rows = _rows(data)
    assert len(rows) == stats.rows
    assert sum(not _is_valid(row) for row in rows) == stats.invalid_rows


def _write_file(path: Path, rows: int) -> bytes:
    out = open_output(str(path))
    try:
        generate_products(out, rows=rows, seed=4)
    finally:
        out.close()
    return _generate(rows=rows, seed=4)[0]


def test_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    expected = _write_file(path, 300)
    assert path.read_bytes() == expected


def test_gzip_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.csv.gz"
    expected = _write_file(path, 300)
    with gzip.open(path, "rb") as f:
        assert f.read() == expected


def test_zstd_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.csv.zst"
    expected = _write_file(path, 300)
    assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    with pa.input_stream(str(path), compression="zstd") as f:
        assert f.read() == expected


def test_dash_is_stdout() -> None:
    assert open_output("-") is sys.stdout.buffer
