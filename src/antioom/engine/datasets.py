"""Datasets: the declared shape of an import — target table, typed columns, rules, key, mode.

Datasets come from TOML (``[datasets.NAME]`` tables, see README) plus the built-in ``products``
dataset, which is the seed's schema. Every name that becomes an SQL identifier is checked here.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from antioom.errors import ConfigError

ColumnType = Literal["string", "integer", "float", "decimal", "boolean", "date", "timestamp"]
Mode = Literal["insert", "upsert"]
NUMERIC_TYPES = ("integer", "float", "decimal")
_PART = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
IDENTIFIER = re.compile(rf"^{_PART}\Z")  # \Z, not $: "name\n" is not a name
TABLE_NAME = re.compile(rf"^(?:{_PART}\.)?{_PART}\Z")  # ``schema.table`` where a sink has schemas
UPDATED_AT = "updated_at"


def check_identifier(name: str, what: str = "name") -> str:
    """Return the table name ``name`` if valid, else raise ConfigError: one identifier, or
    ``schema.table``. Sinks quote names (reserved words are fine); this keeps them portable."""
    if not TABLE_NAME.match(name):
        raise ConfigError(
            f"invalid {what} {name!r}: use letters, digits and underscores, starting with a "
            "letter or underscore (at most 63 characters), optionally after 'schema.'"
        )
    return name


class Column(BaseModel):
    """One target column: where it comes from, its type and the rules a value must pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: ColumnType = "string"
    source: str | None = Field(default=None, description="header name; defaults to name")
    required: bool = False
    trim: bool = True
    lossless: bool = Field(
        default=False, description="reject values the type would alter (leading zeros, digits)"
    )
    min: Decimal | None = None
    max: Decimal | None = None
    gt: Decimal | None = None
    lt: Decimal | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    pattern: str | None = None
    choices: list[str] | None = None
    precision: int = Field(default=38, ge=1, le=38)
    scale: int = Field(default=2, ge=0, le=38)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, name: str) -> str:
        if not IDENTIFIER.match(name):
            raise ValueError("use letters, digits and underscores, starting with a letter or _")
        return name

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            re.compile(pattern)
        return pattern

    @model_validator(mode="after")
    def _rules_fit_type(self) -> Column:
        bounds = (self.min, self.max, self.gt, self.lt)
        if any(b is not None for b in bounds) and self.type not in NUMERIC_TYPES:
            raise ValueError(f"min/max/gt/lt apply to numeric columns, not {self.type}")
        lengths = (self.min_length, self.max_length, self.pattern)
        if any(v is not None for v in lengths) and self.type != "string":
            raise ValueError("min_length/max_length/pattern apply to string columns")
        if self.scale > self.precision:
            raise ValueError("scale cannot exceed precision")
        return self

    @property
    def header(self) -> str:
        """The CSV header name this column is read from."""
        return self.source or self.name


class Dataset(BaseModel):
    """A named import target. ``key`` columns identify a row for upserts and duplicates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    table: str
    columns: tuple[Column, ...] = Field(min_length=1)
    key: tuple[str, ...] = ()
    mode: Mode = "insert"
    updated_at: bool = Field(default=False, description="set an updated_at timestamp on write")

    @model_validator(mode="before")
    @classmethod
    def _table_defaults_to_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "table" not in data and "name" in data:
            return {**data, "table": data["name"]}
        return data

    @field_validator("table")
    @classmethod
    def _table_is_identifier(cls, table: str) -> str:
        if not TABLE_NAME.match(table):
            raise ValueError(
                "use letters, digits and underscores, starting with a letter or _, "
                "optionally after 'schema.'"
            )
        return table

    @model_validator(mode="after")
    def _consistent(self) -> Dataset:
        names = [column.name for column in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        headers = [column.header for column in self.columns]
        if len(set(headers)) != len(headers):
            raise ValueError("two columns read the same source header")
        unknown = [k for k in self.key if k not in names]
        if unknown:
            raise ValueError(f"key names unknown columns: {', '.join(unknown)}")
        if self.mode == "upsert" and not self.key:
            raise ValueError("mode 'upsert' needs a key")
        if self.updated_at and UPDATED_AT in names:
            raise ValueError(f"updated_at = true adds a column {UPDATED_AT!r}; rename yours")
        return self

    def with_options(
        self,
        *,
        mode: Mode | None = None,
        key: tuple[str, ...] | None = None,
        table: str | None = None,
    ) -> Dataset:
        """A copy with CLI/API overrides applied and validated."""
        changes: dict[str, Any] = {}
        if mode is not None:
            changes["mode"] = mode
        if key is not None:
            changes["key"] = key
        if table is not None:
            changes["table"] = table
        if not changes:
            return self
        return parse_dataset(self.name, {**self.model_dump(exclude_none=True), **changes})

    @property
    def value_columns(self) -> tuple[Column, ...]:
        """Columns that are not part of the key (what an upsert updates)."""
        return tuple(c for c in self.columns if c.name not in self.key)


PRODUCTS = Dataset(
    name="products",
    table="products",
    columns=(
        Column(name="sku", type="string", required=True),
        Column(name="name", type="string", required=True),
        Column(name="price", type="float", required=True, gt=Decimal(0)),
    ),
    key=("sku",),
    mode="upsert",
    updated_at=True,
)

BUILTIN: dict[str, Dataset] = {PRODUCTS.name: PRODUCTS}


def parse_dataset(name: str, data: dict[str, Any]) -> Dataset:
    """Validate one dataset definition; errors become a one-line ConfigError."""
    try:
        return Dataset.model_validate({"name": name, "table": name, **data})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"dataset {name!r}: {where + ': ' if where else ''}{message}") from None


def load_datasets(path: str | Path | None = None) -> dict[str, Dataset]:
    """The built-in datasets, plus (and overridden by) those declared in the TOML file."""
    datasets = dict(BUILTIN)
    if path is None:
        return datasets
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read datasets file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"datasets file {path} is not valid TOML: {exc}") from None
    declared = document.get("datasets")
    if not isinstance(declared, dict):
        raise ConfigError(f"datasets file {path} has no [datasets.NAME] tables")
    for name, data in declared.items():
        if not isinstance(data, dict):
            raise ConfigError(f"dataset {name!r} must be a table")
        datasets[name] = parse_dataset(name, data)
    return datasets
