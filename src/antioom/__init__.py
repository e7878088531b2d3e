"""anti-oom: stream CSV files of any size into databases in flat memory.

The embedding API is :func:`import_csv` (blocking), :func:`import_csv_async` and
:class:`PushImport` (for event loops); everything else is reachable from the submodules.
"""

from typing import TYPE_CHECKING, Any

from antioom.api import import_csv
from antioom.engine.datasets import Column, Dataset, load_datasets
from antioom.engine.progress import ProgressEvent, Summary
from antioom.engine.records import Dialect
from antioom.engine.rejects import Reject
from antioom.errors import (
    AntioomError,
    ConfigError,
    DatabaseLost,
    DatabaseUnavailable,
    ImportCancelled,
    ImportConflict,
    InputError,
    TargetError,
    TooManyRejects,
)

if TYPE_CHECKING:
    from antioom.aio import PushImport, import_csv_async


def __getattr__(name: str) -> Any:
    """The asyncio API on first use: the CLI and blocking callers skip importing asyncio."""
    if name in ("PushImport", "import_csv_async"):
        import antioom.aio

        return getattr(antioom.aio, name)
    raise AttributeError(f"module 'antioom' has no attribute {name!r}")


__all__ = [
    "AntioomError",
    "Column",
    "ConfigError",
    "DatabaseLost",
    "DatabaseUnavailable",
    "Dataset",
    "Dialect",
    "ImportCancelled",
    "ImportConflict",
    "InputError",
    "ProgressEvent",
    "PushImport",
    "Reject",
    "Summary",
    "TargetError",
    "TooManyRejects",
    "import_csv",
    "import_csv_async",
    "load_datasets",
]
