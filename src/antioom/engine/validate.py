"""Vectorised validation: a block of raw CSV columns → typed, valid rows plus rejects.

Every rule is evaluated for a whole column at once with Arrow compute kernels, so the cost per
row is a few nanoseconds of C++. Python only runs per *rejected* row, to say which column and
rule failed. A conversion is tried on the whole column first; only when it fails does the
column take the slower path that finds the offending values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from antioom.engine.casting import (
    TYPE_REASONS,
    any_true,
    arrow_type,
    convert,
    infer_type,
    lossy,
    null_like,
)
from antioom.engine.datasets import Column, ColumnType, Dataset, check_identifier
from antioom.engine.decoding import MARKER_PATTERN, show_markers
from antioom.engine.records import Block
from antioom.engine.rejects import Reject
from antioom.errors import ConfigError

COLUMN_TYPES: tuple[ColumnType, ...] = (
    "string",
    "integer",
    "float",
    "decimal",
    "boolean",
    "date",
    "timestamp",
)
UNDECODABLE = (
    "holds bytes that are not valid text in the input's encoding (shown as \\xNN): use --encoding"
)


@dataclass
class Validated:
    """The valid rows of a block, typed, and what was rejected."""

    table: pa.Table
    first_record: int
    gaps: list[int] = field(default_factory=list)  # records of this block that are not rows
    rejects: list[Reject] = field(default_factory=list)
    # Each row's record number, for a block whose rows were filtered (then ``gaps`` is unused).
    records: pa.Array | None = None


@dataclass
class _Check:
    column: str
    reason: str
    bad: pa.Array


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
        # Valid UTF-8 by construction (the decoding stage), so this cast cannot fail.
        strings = [batch.column(i).cast(pa.string()) for i in range(len(self.headers))]
        checks: list[_Check] = self._undecodable(strings) if block.suspect else []
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
        if not any_true(bad):
            return validated
        self._reject(validated, block, strings, checks, bad)
        validated.table = table.filter(pc.invert(bad))
        return validated

    def _undecodable(self, strings: list[pa.Array]) -> list[_Check]:
        """Rows holding bytes the input's encoding could not decode (markers)."""
        names = {c.header: c.name for c in self.dataset.columns}
        checks = []
        for header, values in zip(self.headers, strings, strict=True):
            marked = pc.fill_null(pc.match_substring_regex(values, MARKER_PATTERN), False)
            if any_true(marked):
                checks.append(_Check(names.get(header, header), UNDECODABLE, marked))
        return checks

    def _column(
        self, column: Column, target: pa.DataType, raw: pa.Array
    ) -> tuple[pa.Array, list[_Check]]:
        """Type one column. Unquoted empty fields arrive as NULL; a quoted empty one as ""
        (kept in untrimmed text columns, as DuckDB does, and NULL everywhere else)."""
        checks: list[_Check] = []
        values = pc.utf8_trim_whitespace(raw) if column.trim else raw
        empty = pc.equal(pc.binary_length(values), 0)
        if column.required or column.name in self.dataset.key:
            missing = pc.fill_null(empty, True)
            if any_true(missing):
                checks.append(_Check(column.name, "required value is missing", missing))
        if (column.trim or column.type != "string") and any_true(empty):
            values = pc.if_else(pc.fill_null(empty, False), null_like(values), values)
        typed, bad_type = convert(values, column.type, target)
        if bad_type is not None:
            checks.append(_Check(column.name, f"{TYPE_REASONS[column.type]}", bad_type))
        if column.lossless:
            changed = lossy(values, column.type)
            if changed is not None:
                mask, reason = changed
                checks.append(_Check(column.name, reason.replace("NAME", column.name), mask))
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
        # A reject shows the fields as written: an empty field (NULL once parsed) is "".
        raw = [pc.take(pc.fill_null(column, ""), rows).to_pylist() for column in strings]
        if block.suspect:
            raw = [[show_markers(v) for v in values] for values in raw]
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


def infer_dataset(
    table: str,
    headers: Sequence[str],
    sample: pa.RecordBatch,
    *,
    types: Mapping[str, str] | None = None,
    infer: bool = True,
    renames: Mapping[str, str] | None = None,
) -> Dataset:
    """A dataset for ``--table`` imports: one column per header, types inferred from a sample.

    ``types`` forces a column's type (by header or column name: ``decimal``, or
    ``decimal(P,S)``); ``infer=False`` makes every other column text. Inferred numeric columns
    are ``lossless``: a later value the type would change (``007``) is rejected, not altered.
    """
    check_identifier(table, "table name")
    names = column_names(headers)
    if renames:
        unknown_names = sorted(set(renames) - set(names) - set(headers))
        if unknown_names:
            raise ConfigError(
                f"--rename names unknown column(s) {', '.join(unknown_names)}; the columns "
                f"are {', '.join(names)}"
            )
        names = [renames.get(h) or renames.get(n) or n for h, n in zip(headers, names, strict=True)]
        for name in names:
            check_identifier(name, "column name")
        if len(set(names)) < len(names):
            raise ConfigError(f"--rename gives two columns one name: {', '.join(names)}")
    forced = {key: _parse_type(key, value) for key, value in (types or {}).items()}
    unknown = sorted(set(forced) - set(names) - set(headers))
    if unknown:
        raise ConfigError(
            f"--type names unknown column(s) {', '.join(unknown)}; the columns are "
            f"{', '.join(names)}"
        )
    columns: list[Column] = []
    for i, (header, name) in enumerate(zip(headers, names, strict=True)):
        spec = forced.get(name) or forced.get(header)
        source = None if header == name else header
        if spec is not None:
            column_type, precision, scale = spec
            columns.append(
                Column(
                    name=name,
                    type=column_type,
                    source=source,
                    trim=column_type != "string",
                    precision=precision,
                    scale=scale,
                )
            )
            continue
        column_type = _sampled_type(sample.column(i)) if infer else "string"
        columns.append(
            Column(
                name=name,
                type=column_type,
                source=source,
                trim=column_type != "string",
                lossless=column_type in ("integer", "float"),
            )
        )
    return Dataset(name=table, table=table, columns=tuple(columns))


def _sampled_type(raw: pa.Array) -> ColumnType:
    values = pc.utf8_trim_whitespace(raw.cast(pa.string()))
    if any_true(pc.fill_null(pc.match_substring_regex(values, MARKER_PATTERN), False)):
        return "string"  # undecodable bytes: those rows are rejected, the rest stay text
    return infer_type(pc.filter(values, pc.greater(pc.binary_length(values), 0)))


DECIMAL_SPEC = re.compile(r"^decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$")


def _parse_type(name: str, spec: str) -> tuple[ColumnType, int, int]:
    """``integer`` → (integer, 38, 2); ``decimal(10,4)`` → (decimal, 10, 4)."""
    text = spec.strip().lower()
    match = DECIMAL_SPEC.match(text)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise ConfigError(f"--type {name}={spec}: use decimal(P,S) with S <= P <= 38")
        return "decimal", precision, scale
    for column_type in COLUMN_TYPES:
        if text == column_type:
            return column_type, 38, 2
    raise ConfigError(
        f"--type {name}={spec}: unknown type; use one of {', '.join(COLUMN_TYPES)} or decimal(P,S)"
    )


def column_names(headers: Sequence[str]) -> list[str]:
    """Header names made into unique, safe SQL identifiers (``Unit Price`` → ``unit_price``).

    Names that collide once made safe get ``_1``, ``_2``… as the header's own repeats do.
    """
    names: list[str] = []
    for header in headers:
        name = re.sub(r"[^a-z0-9_]+", "_", header.strip().lower()).strip("_")[:60] or "column"
        if name[0].isdigit():
            name = "c_" + name
        candidate, suffix = name, 1
        while candidate in names:
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        names.append(candidate)
    return names
