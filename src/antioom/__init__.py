"""anti-oom: stream CSV files of any size into databases in flat memory.

The embedding API is :func:`import_csv`; everything else is reachable from the submodules.
"""

from antioom.api import import_csv
from antioom.engine.datasets import Column, Dataset, load_datasets
from antioom.engine.progress import ProgressEvent, Summary
from antioom.engine.rejects import Reject
from antioom.errors import (
    AntioomError,
    ConfigError,
    DatabaseLost,
    DatabaseUnavailable,
    ImportCancelled,
    InputError,
    TargetError,
)

__all__ = [
    "AntioomError",
    "Column",
    "ConfigError",
    "DatabaseLost",
    "DatabaseUnavailable",
    "Dataset",
    "ImportCancelled",
    "InputError",
    "ProgressEvent",
    "Reject",
    "Summary",
    "TargetError",
    "import_csv",
    "load_datasets",
]
