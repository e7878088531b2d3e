"""CSV dialect and column-type options from an upload's query string.

``POST /imports?delimiter=;&encoding=latin-1&header=false`` takes the options of
``antioom import``. They are checked when the request starts, so a bad value is an HTTP 400
before any of the body is read. Omitted options are detected, as on the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import HTTPException, Query

from antioom.engine.pipeline import Options, Target
from antioom.engine.records import Dialect
from antioom.errors import ConfigError

TAB_SPELLINGS = ("\\t", "tab")  # a real tab arrives as %09


def _char(text: str | None) -> str | None:
    """``\\t`` or ``tab`` → a tab; anything else as given."""
    return "\t" if text is not None and text.lower() in TAB_SPELLINGS else text


def _names(text: str | None, what: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ConfigError(f"{what}: expected comma-separated names")
    return names


def dialect_from_query(
    *,
    delimiter: str | None = None,
    quote: str | None = None,
    escape: str | None = None,
    encoding: str | None = None,
    header: bool | None = None,
    columns: str | None = None,
    skip: int | None = None,
    comment: str | None = None,
    null: str | None = None,
) -> Dialect:
    """The :class:`Dialect` the query asks for (``None`` values are detected); ConfigError if
    a value is invalid. ``quote=`` and ``escape=`` (empty) mean none."""
    return Dialect(
        delimiter=_char(delimiter),
        quote_char=quote,
        escape_char=_char(escape),
        header=header,
        columns=_names(columns, "columns"),
        encoding=encoding or None,
        skip_lines=skip,
        comment=comment,
        null_values=tuple(null.split(",")) if null else (),
    )


def types_from_query(specs: Sequence[str] | None) -> dict[str, str] | None:
    """``["price=decimal", "zip=string"]`` → ``{"price": "decimal", "zip": "string"}``;
    the type names are checked here, the column names once the header is read."""
    if not specs:
        return None
    from antioom.engine.validate import _parse_type

    overrides: dict[str, str] = {}
    for spec in specs:
        name, sep, column_type = spec.partition("=")
        if not sep or not name.strip() or not column_type.strip():
            raise ConfigError(f"invalid type {spec!r}: use NAME=TYPE, e.g. type=zip=string")
        try:
            _parse_type(name.strip(), column_type.strip())
        except ConfigError as exc:  # the engine's message names the CLI option
            raise ConfigError(str(exc).replace("--type ", "type=", 1)) from None
        overrides[name.strip()] = column_type.strip()
    return overrides


@dataclass(frozen=True)
class CsvOptions:
    """The checked dialect and table-mode column options of one upload."""

    dialect: Dialect
    types: dict[str, str] | None = None
    infer: bool = True
    limit: int | None = None
    max_rejects: int | None = None

    def options(self) -> Options:
        """The engine options they ask for (the server sets batch size and import id)."""
        return Options(dialect=self.dialect, limit=self.limit, max_rejects=self.max_rejects)

    def apply(self, target: Target) -> Target:
        """``target`` with the column options; HTTP 400 if it is a dataset, whose columns
        are declared."""
        if target.dataset is not None and (self.types or not self.infer):
            raise HTTPException(
                400,
                "type and infer apply to table imports (?table=NAME): a dataset declares "
                "its columns",
            )
        return replace(target, types=self.types, infer=self.infer)


def csv_options(
    delimiter: str | None = Query(
        None,
        description="Field delimiter, one character; a tab as `%09`, `\\t` or `tab`. "
        "Default: detected among `,` `;` `|` and tab.",
    ),
    quote: str | None = Query(
        None, description="Quote character; empty for none. Default: detected (`\"` or `'`)."
    ),
    escape: str | None = Query(
        None, description="Escape character; empty for none. Default: detected (none or `\\`)."
    ),
    encoding: str | None = Query(
        None,
        description="Text encoding (any Python codec: `latin-1`, `cp1252`, `utf-16`…). "
        "Default: from a BOM, else UTF-8.",
    ),
    header: bool | None = Query(
        None, description="Whether the first record is a header (true/false). Default: detected."
    ),
    columns: str | None = Query(
        None, description="Column names, comma-separated (a header row is then skipped)."
    ),
    skip: int | None = Query(
        None, description="Skip this many lines first. Default: a preamble is detected."
    ),
    comment: str | None = Query(
        None, description="Drop lines starting with this character, e.g. `#`."
    ),
    null: str | None = Query(
        None,
        description="Values read as NULL, comma-separated, e.g. `NULL,\\N,NA` (besides empty).",
    ),
    types: Annotated[
        list[str] | None,
        Query(
            alias="type",
            description="Table imports: force a column's type, `NAME=TYPE` (repeatable), e.g. "
            "`type=zip=string&type=price=decimal(10,2)`.",
        ),
    ] = None,
    infer: bool = Query(
        True, description="Table imports: false makes every column text (no type inference)."
    ),
    limit: int | None = Query(None, ge=0, description="Import the first N records only."),
    max_rejects: int | None = Query(
        None,
        ge=0,
        description="Stop the import (422) once more rows than this are rejected; batches "
        "committed before stay. 0: stop at the first rejected row.",
    ),
) -> CsvOptions:
    """The upload's CSV options, checked before any of the body is read (HTTP 400)."""
    try:
        dialect = dialect_from_query(
            delimiter=delimiter,
            quote=quote,
            escape=escape,
            encoding=encoding,
            header=header,
            columns=columns,
            skip=skip,
            comment=comment,
            null=null,
        )
        return CsvOptions(dialect, types_from_query(types), infer, limit, max_rejects)
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
