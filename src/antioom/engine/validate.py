"""Vectorised validation: a block of raw CSV columns → typed, valid rows plus rejects.

Every rule is evaluated for a whole column at once with Arrow compute kernels, so the cost per
row is a few nanoseconds of C++. Python only runs per *rejected* row, to say which column and
rule failed. A conversion is tried on the whole column first; only when it fails does the
column take the slower path that finds the offending values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from antioom.engine.datasets import Column, ColumnType, Dataset, check_identifier
from antioom.engine.records import Block
from antioom.engine.rejects import Reject
from antioom.errors import InputError

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")

# The accepted syntax of each type, in RE2. The regexes are only consulted when a whole-column
# cast fails, to tell good values from bad; a value that matches still has to cast.
SYNTAX: dict[ColumnType, str] = {
    "integer": r"^[+-]?\d{1,19}$",
    "float": r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$",
    "decimal": r"^[+-]?(\d+\.?\d*|\.\d+)$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "timestamp": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$",
}
TYPE_REASONS: dict[ColumnType, str] = {
    "integer": "not an integer",
    "float": "not a number",
    "decimal": "not a decimal number",
    "boolean": "not a boolean (true/false, yes/no, 1/0)",
    "date": "not a date (YYYY-MM-DD)",
    "timestamp": "not a timestamp (YYYY-MM-DD HH:MM:SS)",
    "string": "",
}


def arrow_type(column: Column) -> pa.DataType:
    """The Arrow type a column's values are converted to."""
    return {
        "string": pa.string(),
        "integer": pa.int64(),
        "float": pa.float64(),
        "decimal": pa.decimal128(column.precision, column.scale),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
    }[column.type]


@dataclass
class Validated:
    """The valid rows of a block, typed, and what was rejected."""

    table: pa.Table
    first_record: int
    gaps: list[int] = field(default_factory=list)  # records of this block that are not rows
    rejects: list[Reject] = field(default_factory=list)


@dataclass
class _Check:
    column: str
    reason: str
    bad: pa.Array


def _any(mask: pa.Array) -> bool:
    return bool(pc.any(mask).as_py())


def _null_like(values: pa.Array) -> pa.Scalar:
    return pa.scalar(None, values.type)


def convert(
    values: pa.Array, column_type: ColumnType, target: pa.DataType
) -> tuple[pa.Array, pa.Array | None]:
    """Convert non-null strings to ``target``: (typed values, mask of bad values or None)."""
    if column_type == "string":
        return values, None
    if column_type == "boolean":
        lowered = pc.utf8_lower(values)
        truthy = pc.is_in(lowered, value_set=pa.array(TRUE_WORDS))
        known = pc.or_(truthy, pc.is_in(lowered, value_set=pa.array(FALSE_WORDS)))
        bad = pc.and_(pc.is_valid(values), pc.invert(known))
        return pc.if_else(pc.is_valid(values), truthy, pa.scalar(None, pa.bool_())), bad
    try:
        typed = pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _convert_slowly(values, column_type, target)
    if column_type == "float":
        bad = pc.invert(pc.fill_null(pc.is_finite(typed), True))
        return typed, bad if _any(bad) else None
    return typed, None


def _convert_slowly(
    values: pa.Array, column_type: ColumnType, target: pa.DataType
) -> tuple[pa.Array, pa.Array]:
    """Find the values that do not convert: syntax by regex, then per value if still needed."""
    looks_right = pc.fill_null(pc.match_substring_regex(values, SYNTAX[column_type]), True)
    candidates = pc.if_else(looks_right, values, _null_like(values))
    try:
        typed = pc.cast(candidates, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        converted: list[Any] = []
        for value in candidates.to_pylist():
            try:
                converted.append(None if value is None else pa.scalar(value).cast(target).as_py())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                converted.append(None)
        typed = pa.array(converted, type=target)
    bad = pc.and_(pc.is_valid(values), pc.is_null(typed))
    return typed, bad


def _bound(column: Column, value: Decimal, target: pa.DataType) -> pa.Scalar:
    if column.type == "integer":
        return pa.scalar(int(value) if value == int(value) else float(value))
    if column.type == "float":
        return pa.scalar(float(value))
    return pa.scalar(value, target)


class Validator:
    """Validates blocks for one dataset. ``headers`` are the block's column names, in order."""

    def __init__(self, dataset: Dataset, headers: Sequence[str]) -> None:
        self.dataset = dataset
        self.headers = list(headers)
        self._position = {name: i for i, name in enumerate(self.headers)}
        self._targets = [arrow_type(column) for column in dataset.columns]
        self.schema = pa.schema(
            [pa.field(c.name, t) for c, t in zip(dataset.columns, self._targets, strict=True)]
        )

    def validate(self, block: Block) -> Validated:
        batch = block.batch
        strings = [
            self._decode(batch.column(i), name, block) for i, name in enumerate(self.headers)
        ]
        checks: list[_Check] = []
        typed_columns: list[pa.Array] = []
        for column, target in zip(self.dataset.columns, self._targets, strict=True):
            position = self._position.get(column.header)
            if position is None:  # an optional column the input does not have
                typed_columns.append(pa.nulls(batch.num_rows, target))
                continue
            typed, column_checks = self._column(column, target, strings[position])
            typed_columns.append(typed)
            checks.extend(column_checks)
        table = pa.Table.from_arrays(typed_columns, schema=self.schema)
        validated = Validated(table, block.first_record, list(block.skipped), list(block.malformed))
        if not checks or batch.num_rows == 0:
            return validated
        bad = checks[0].bad
        for check in checks[1:]:
            bad = pc.or_(bad, check.bad)
        if not _any(bad):
            return validated
        self._reject(validated, block, strings, checks, bad)
        validated.table = table.filter(pc.invert(bad))
        return validated

    def _decode(self, column: pa.Array, header: str, block: Block) -> pa.Array:
        try:
            return column.cast(pa.string())
        except pa.ArrowInvalid:
            for row, value in enumerate(column.to_pylist()):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"record {block.record_number(row)}, column {header!r}: byte "
                        f"0x{value[exc.start]:02x} at offset {exc.start} is not valid UTF-8 "
                        "(is the file in another encoding? use --encoding)"
                    ) from None
            raise

    def _column(
        self, column: Column, target: pa.DataType, raw: pa.Array
    ) -> tuple[pa.Array, list[_Check]]:
        checks: list[_Check] = []
        values = pc.utf8_trim_whitespace(raw) if column.trim else raw
        empty = pc.equal(pc.binary_length(values), 0)
        if _any(empty):
            if column.required or column.name in self.dataset.key:
                checks.append(_Check(column.name, "required value is missing", empty))
            values = pc.if_else(empty, _null_like(values), values)
        typed, bad_type = convert(values, column.type, target)
        if bad_type is not None:
            checks.append(_Check(column.name, f"{TYPE_REASONS[column.type]}", bad_type))
        checks.extend(self._rules(column, target, values, typed))
        return typed, checks

    def _rules(
        self, column: Column, target: pa.DataType, values: pa.Array, typed: pa.Array
    ) -> list[_Check]:
        rules: list[tuple[str, pa.Array]] = []
        comparisons = (
            (column.min, pc.less, "must be >= {}"),
            (column.max, pc.greater, "must be <= {}"),
            (column.gt, pc.less_equal, "must be > {}"),
            (column.lt, pc.greater_equal, "must be < {}"),
        )
        for bound, failing, reason in comparisons:
            if bound is not None:
                rules.append((reason.format(bound), failing(typed, _bound(column, bound, target))))
        if column.min_length is not None:
            rules.append(
                (
                    f"shorter than {column.min_length} characters",
                    pc.less(pc.utf8_length(values), column.min_length),
                )
            )
        if column.max_length is not None:
            rules.append(
                (
                    f"longer than {column.max_length} characters",
                    pc.greater(pc.utf8_length(values), column.max_length),
                )
            )
        if column.pattern is not None:
            matches = pc.match_substring_regex(values, f"^(?:{column.pattern})$")
            rules.append((f"does not match pattern {column.pattern}", pc.invert(matches)))
        if column.choices is not None:
            allowed = pc.is_in(values, value_set=pa.array(column.choices))
            rules.append(
                (
                    f"not one of: {', '.join(column.choices)}",
                    pc.and_(pc.is_valid(values), pc.invert(allowed)),
                )
            )
        return [_Check(column.name, reason, pc.fill_null(bad, False)) for reason, bad in rules]

    def _reject(
        self,
        validated: Validated,
        block: Block,
        strings: list[pa.Array],
        checks: list[_Check],
        bad: pa.Array,
    ) -> None:
        rows = pc.indices_nonzero(bad)
        flags = [pc.take(check.bad, rows).to_pylist() for check in checks]
        raw = [pc.take(column, rows).to_pylist() for column in strings]
        for position, row in enumerate(rows.to_pylist()):
            first = next(i for i, flag in enumerate(flags) if flag[position])
            record = block.record_number(row)
            values = {header: raw[i][position] for i, header in enumerate(self.headers)}
            validated.rejects.append(
                Reject(
                    record=record,
                    column=checks[first].column,
                    reason=checks[first].reason,
                    values=values,
                )
            )
            validated.gaps.append(record)
        validated.gaps.sort()
        validated.rejects.sort(key=lambda reject: reject.record)


def infer_dataset(table: str, headers: Sequence[str], sample: pa.RecordBatch) -> Dataset:
    """A dataset for ``--table`` imports: one column per header, types inferred from a sample."""
    check_identifier(table, "table name")
    names = column_names(headers)
    columns: list[Column] = []
    for i, (header, name) in enumerate(zip(headers, names, strict=True)):
        try:
            values = pc.utf8_trim_whitespace(sample.column(i).cast(pa.string()))
        except pa.ArrowInvalid:  # not UTF-8: validation reports the record; text meanwhile
            values = pa.array([], pa.string())
        values = pc.filter(values, pc.greater(pc.binary_length(values), 0))
        columns.append(
            Column(name=name, type=_infer_type(values), source=None if header == name else header)
        )
    return Dataset(name=table, table=table, columns=tuple(columns))


def _infer_type(values: pa.Array) -> ColumnType:
    if len(values) == 0:
        return "string"
    for candidate in ("integer", "float", "boolean", "date", "timestamp"):
        column = Column(name="x", type=candidate)
        try:
            _, bad = convert(values, candidate, arrow_type(column))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if bad is None or not _any(bad):
            return candidate
    return "string"


def column_names(headers: Sequence[str]) -> list[str]:
    """Header names made into unique, safe SQL identifiers (``Unit Price`` → ``unit_price``)."""
    names: list[str] = []
    for header in headers:
        name = re.sub(r"[^a-z0-9_]+", "_", header.strip().lower()).strip("_")[:60] or "column"
        if name[0].isdigit():
            name = "c_" + name
        candidate, suffix = name, 2
        while candidate in names:
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        names.append(candidate)
    return names
