"""The sink of ``--dry-run``: writes nothing and needs no database.

The whole input is read, parsed and validated as for a real import, so the summary's counts
and the rejects are those of the file. What only a database can tell is not checked: a key that
is already in the table, or repeated in the file in insert mode, and values the database itself
would refuse.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from antioom.engine.batching import Batch
from antioom.engine.datasets import Dataset
from antioom.sinks.base import ALL_SEQS, Committed, Sink, WriteResult


class DryRunSink(Sink):
    def prepare(self, dataset: Dataset, *, alter: bool = False) -> None:
        self.dataset = dataset

    def clear(self, table: str, *, drop: bool) -> None:
        """Nothing to clear: nothing is written."""

    def committed(self, import_id: str, seqs: range = ALL_SEQS) -> Committed:
        return Committed()

    def encode(self, table: pa.Table) -> Any:
        return None

    def write(self, batch: Batch) -> WriteResult:
        return WriteResult([])

    def close(self) -> None:
        """No connection to release."""
