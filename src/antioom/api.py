"""The embedding API: one call imports a CSV path or binary stream into a database URL.

    from antioom import import_csv
    summary = import_csv("products.csv", "postgresql://localhost/shop", dataset="products",
                         on_progress=print)

The CLI and the HTTP server are thin layers over this function.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from antioom.engine.datasets import Dataset, load_datasets
from antioom.engine.pipeline import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_SIZE,
    Options,
    Target,
    run_import,
)
from antioom.engine.progress import ProgressEvent, Summary
from antioom.engine.records import Dialect
from antioom.engine.rejects import Reject
from antioom.engine.source import CountingReader, Readable, open_path
from antioom.errors import ConfigError
from antioom.sinks import open_sink

DEFAULT_DB = "sqlite:///antioom.db"


def default_db() -> str:
    """``ANTIOOM_DB_URL`` if set, else the embedded SQLite default."""
    return os.environ.get("ANTIOOM_DB_URL") or DEFAULT_DB


def resolve_dataset(name: str, datasets_file: str | Path | None = None) -> Dataset:
    """Find a dataset by name among the built-ins and ``datasets_file`` (or ANTIOOM_DATASETS)."""
    datasets = load_datasets(datasets_file or os.environ.get("ANTIOOM_DATASETS") or None)
    if name not in datasets:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(datasets))}")
    return datasets[name]


def import_csv(
    source: str | Path | Readable,
    db: str | None = None,
    *,
    dataset: str | Dataset | None = None,
    table: str | None = None,
    mode: Literal["insert", "upsert"] | None = None,
    key: tuple[str, ...] | None = None,
    types: Mapping[str, str] | None = None,
    infer: bool = True,
    datasets_file: str | Path | None = None,
    dialect: Dialect | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    import_id: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    on_reject: Callable[[Reject], None] | None = None,
    cancel: threading.Event | None = None,
) -> Summary:
    """Stream ``source`` (a path, ``-`` for stdin, or a binary stream) into ``db``.

    Give ``dataset`` (a name or a :class:`Dataset`) or ``table`` (columns inferred; ``types``
    forces some, e.g. ``{"zip": "string"}``, and ``infer=False`` makes all text). Returns
    the summary; raises an :class:`~antioom.errors.AntioomError` on fatal errors, with the
    partial summary as ``error.summary``. The database is connected before any byte is read.
    """
    if dataset is None and table is None:
        raise ConfigError("choose a dataset (--dataset NAME) or a table (--table NAME)")
    if batch_size < 1 or batch_bytes < 1:
        raise ConfigError("the batch size must be at least 1")
    if isinstance(dataset, str):
        dataset = resolve_dataset(dataset, datasets_file)
    target = Target(dataset=dataset, table=table, mode=mode, key=key, types=types, infer=infer)
    options = Options(
        dialect=dialect or Dialect(),
        batch_size=batch_size,
        batch_bytes=batch_bytes,
        import_id=import_id,
    )
    with open_sink(db or default_db()) as sink:
        reader = open_path(source) if isinstance(source, str | Path) else CountingReader(source)
        try:
            return run_import(
                reader,
                sink,
                target,
                options,
                on_progress=on_progress,
                on_reject=on_reject,
                cancel=cancel,
            )
        finally:
            reader.close()
