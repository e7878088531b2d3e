"""Errors that end an import, each with the CLI exit code that documents it.

Everything a user can cause (bad input, bad options, an unreachable database) is one of these
and is shown as a one-line message; anything else is a bug and is reported as such.
"""

from __future__ import annotations


class AntioomError(Exception):
    """An error with a one-line, user-facing message."""

    exit_code = 1


class ConfigError(AntioomError):
    """Invalid options, dataset file or database URL."""

    exit_code = 2


class ImportConflict(ConfigError):
    """The import id is taken: completed, or being written by another process."""


class InputError(AntioomError):
    """The input cannot be imported: unreadable, undecodable, a bad header, a limit exceeded."""

    exit_code = 3


class DatabaseUnavailable(AntioomError):
    """The database could not be reached before anything was read."""

    exit_code = 4


class DatabaseLost(AntioomError):
    """The database failed in the middle of an import; committed batches stay committed."""

    exit_code = 5


class StagingUnavailable(AntioomError):
    """The staging storage failed for a while (S3 throttling, a 5xx, a broken connection):
    a queued import's job is tried again."""

    exit_code = 4


class TargetError(AntioomError):
    """The target table cannot take this data: invalid or reserved names the database refuses,
    too many columns, an existing table whose columns do not fit."""

    exit_code = 6


class TooManyRejects(AntioomError):
    """More rows were rejected than ``--max-rejects`` allows; committed batches stay."""

    exit_code = 7


class ImportCancelled(AntioomError):
    """The import was cancelled (client abort, DELETE, Ctrl-C) at a batch boundary."""

    exit_code = 130
