"""Text values → typed values: the accepted syntax of each type, conversion, and inference.

Conversion is vectorised (Arrow kernels over a whole column); the per-value path runs only
for a column whose cast failed, to find the offending values. Inference is conservative:
a column is given a type only if every sampled value round-trips through it unchanged in
meaning. ``08123`` stays text (a zip code, not 8123), an integer too big for 64 bits stays
text (not a rounded float), and only ``true``/``false`` infer as boolean (``y``/``n`` or
``1``/``0`` are as likely codes as truth values).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from antioom.engine.datasets import Column, ColumnType

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
INFERRED_BOOLEANS = ("true", "false")

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
# A number written with a leading zero ("007", "-01.5") is a code: a numeric type drops it.
LEADING_ZERO = r"^[+-]?0\d"
# float64 keeps 15 significant decimal digits exactly; more would be rounded away.
FLOAT_DIGITS = 15
INFER_ORDER: tuple[ColumnType, ...] = ("integer", "float", "boolean", "date", "timestamp")


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


def any_true(mask: pa.Array) -> bool:
    return bool(pc.any(mask).as_py())


def null_like(values: pa.Array) -> pa.Scalar:
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
        return typed, bad if any_true(bad) else None
    return typed, None


def _convert_slowly(
    values: pa.Array, column_type: ColumnType, target: pa.DataType
) -> tuple[pa.Array, pa.Array]:
    """Find the values that do not convert: syntax by regex, then per value if still needed."""
    looks_right = pc.fill_null(pc.match_substring_regex(values, SYNTAX[column_type]), True)
    candidates = pc.if_else(looks_right, values, null_like(values))
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


def lossy(values: pa.Array, column_type: ColumnType) -> tuple[pa.Array, str] | None:
    """Values a numeric type would change in meaning, with the reason; None if none can.

    Used for inferred columns beyond the sample: a later ``0042`` in a column inferred as
    integer is rejected with this reason rather than stored as 42.
    """
    if column_type not in ("integer", "float", "decimal"):
        return None
    zeros = _leading_zeros(values)
    long_values = pc.fill_null(pc.greater(pc.binary_length(values), FLOAT_DIGITS), False)
    if column_type == "float" and any_true(long_values):  # only long values can have too many
        digits = pc.utf8_length(
            pc.replace_substring_regex(
                pc.replace_substring_regex(values, r"[eE].*$", ""), r"^[^1-9]*|[^0-9]", ""
            )
        )
        too_long = pc.fill_null(pc.greater(digits, FLOAT_DIGITS), False)
        if any_true(too_long):
            return pc.or_(zeros, too_long), (
                f"leading zero or more than {FLOAT_DIGITS} digits would be lost (the column "
                "was inferred as a number: use --type NAME=string)"
            )
    if not any_true(zeros):
        return None
    return zeros, (
        "leading zero would be lost (the column was inferred as a number: use --type NAME=string)"
    )


def _leading_zeros(values: pa.Array) -> pa.Array:
    """Mask of values written with a leading zero; the regex runs only if some value starts
    with 0 or a sign (a prefix test is ~10x cheaper than the regex on a numeric column)."""
    starts = [pc.starts_with(values, prefix) for prefix in ("0", "-", "+")]
    if not any(any_true(pc.fill_null(mask, False)) for mask in starts):
        return pa.nulls(len(values), pa.bool_()).fill_null(False)
    return pc.fill_null(pc.match_substring_regex(values, LEADING_ZERO), False)


INFER_HEAD = 64  # values a type is tried on before the whole sample


def infer_type(values: pa.Array) -> ColumnType:
    """The most specific type every one of ``values`` (trimmed, non-empty strings) fits."""
    if len(values) == 0:
        return "string"
    head = values.slice(0, INFER_HEAD)
    for candidate in INFER_ORDER:
        # A type the first values refuse, all of them refuse: trying it on those alone first
        # spares a text column five casts of the whole sample (~0.1 s each at 30,000 values).
        if len(values) > INFER_HEAD and _fitted_type(head, candidate) is None:
            continue
        fitted = _fitted_type(values, candidate)
        if fitted is not None:
            return fitted
    return "string"


def _fitted_type(values: pa.Array, candidate: ColumnType) -> ColumnType | None:
    """The type ``values`` get if ``candidate`` is tried (itself, or text where it would lose
    something); None: they do not fit it, try the next."""
    column = Column(name="x", type=candidate)
    if candidate == "boolean":
        words = pc.is_in(pc.utf8_lower(values), value_set=pa.array(INFERRED_BOOLEANS))
        return candidate if pc.all(words).as_py() else None
    try:
        _, bad = convert(values, candidate, arrow_type(column))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if bad is None or not any_true(bad):
        return "string" if lossy(values, candidate) is not None else candidate
    if candidate == "integer" and pc.all(pc.match_substring_regex(values, r"^[+-]?\d+$")).as_py():
        return "string"  # whole numbers too big for 64 bits: a float would round them
    return None


def castable(value: str, column_type: ColumnType) -> bool:
    """Whether one value (as written) fits ``column_type``: for telling a header from data."""
    text = value.strip()
    if not text or column_type == "string":
        return True
    if column_type == "boolean":
        return text.lower() in INFERRED_BOOLEANS
    values = pa.array([text])
    try:
        _, bad = convert(values, column_type, arrow_type(Column(name="x", type=column_type)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return (bad is None or not any_true(bad)) and lossy(values, column_type) is None
