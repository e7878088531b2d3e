"""Sinks: one module per database, chosen by the URL's scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from antioom.errors import ConfigError
from antioom.sinks.base import RowError, Sink, WriteResult

__all__ = ["RowError", "Sink", "WriteResult", "open_sink", "redact", "scheme_of"]

SCHEMES = {
    "sqlite": "antioom.sinks.sqlite:SQLiteSink",
    "postgresql": "antioom.sinks.postgres:PostgresSink",
    "postgres": "antioom.sinks.postgres:PostgresSink",
    **dict.fromkeys(("mysql", "mariadb"), "antioom.sinks.mysql:MySQLSink"),
    "mongodb": "antioom.sinks.mongo:MongoSink",  # and mongodb+srv
}


def scheme_of(url: str) -> str:
    """The database kind of ``url`` (``mongodb+srv`` → ``mongodb``); ConfigError if unknown."""
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme not in SCHEMES:
        known = ", ".join(sorted({s + "://" for s in SCHEMES}))
        raise ConfigError(f"unsupported database URL {redact(url)!r}; supported: {known}")
    return scheme


def open_sink(url: str) -> Sink:
    """Connect to the database named by ``url`` (raises DatabaseUnavailable if unreachable)."""
    module_name, class_name = SCHEMES[scheme_of(url)].split(":")
    module = __import__(module_name, fromlist=[class_name])
    sink: Sink = getattr(module, class_name)(url)
    return sink


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
