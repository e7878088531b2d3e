"""MongoDB via pymongo: ``mongodb://user:pass@host:port/dbname`` (or ``mongodb+srv://``).

A dataset becomes the collection named after its table; each row a document whose values keep
their types: int64, double, Decimal128 (exact, at most 34 significant digits; a longer value
refuses its row), bool, string, and BSON datetime for dates (midnight UTC: BSON has no date-only
type) and timestamps (naive values are taken as UTC and truncated to milliseconds, BSON's
resolution). A null is stored as BSON null, never omitted, so that an upsert clears a value
the way the SQL sinks do (``{field: null}`` matches both anyway).

Upsert mirrors the seed: one unordered ``bulk_write`` of ``UpdateOne(key, {"$set": values +
updated_at}, upsert=True)`` per batch, after ``encode`` kept the last occurrence of each key
(an unordered bulk has no order, so two updates of one key would race): the last occurrence in
the file wins, within a batch and across batches. Insert is one unordered ``insert_many``; with
a key, the k-th occurrences of a key repeated within a batch go in the k-th round trip, so the
first occurrence is the one that lands. The key has a unique index; the documents the server
refuses (duplicate key, validation, too large) are reported with its reason, the rest stand.

Exactly once, honestly: a standalone server has no multi-document transactions, so a batch's
writes and its ledger entry (``antioom_batches``, unique on ``(import_id, seq)``) cannot commit
together. The ledger document is inserted after the batch's writes succeed, and a batch whose
entry exists is skipped. If the process dies between the two, a replay writes the batch again:
upserts are idempotent (same values; only ``updated_at`` moves), and inserted documents carry
an ``_id`` derived from the import id and their record number (:func:`replay_id`), so a
replayed document is found by its ``_id`` and counted as landed, never stored twice. Only a
dataset that maps a CSV column to ``_id`` itself loses this: a replay then sees its rows
refused as duplicate keys (reported as rejects although they landed the first time).

Names need no quoting: column names are identifiers (never ``$…`` or dotted, which MongoDB
would read as operators or paths), and a ``schema.table`` dataset is the collection of that
dotted name (MongoDB's own convention, as in ``fs.files``), except the reserved ``system.*``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import bson
import pyarrow as pa
import pyarrow.compute as pc
from bson import Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS
from bson.errors import InvalidDocument
from pymongo import ASCENDING, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidURI,
    OperationFailure,
    PyMongoError,
)

from antioom.engine.batching import Batch, last_rows
from antioom.engine.datasets import UPDATED_AT, Column, Dataset
from antioom.errors import ConfigError, DatabaseLost, DatabaseUnavailable, TargetError
from antioom.sinks import redact
from antioom.sinks.base import (
    ALL_SEQS,
    LEDGER_TABLE,
    Committed,
    RowError,
    Sink,
    WriteResult,
    before_commit,
    claim_conflict,
    ledger_totals,
)

Document = dict[str, Any]

# Defaults for options the URL does not set: fail fast when nothing answers.
CLIENT_DEFAULTS: dict[str, Any] = {"serverSelectionTimeoutMS": 3000, "connectTimeoutMS": 10_000}
DEFAULT_MAX_BSON_SIZE = 16 * 1024 * 1024
DECIMAL128_DIGITS = 34
_EXPONENT_BIAS = 6176
_SIGN = 1 << 63
_MS_PER_DAY = 86_400_000
_DNS_WORDS = ("DNS", "resolution", "SRV", "TXT")


@dataclass
class _Round:
    """One round trip: ``requests[i]`` writes batch row ``rows[i]``."""

    rows: list[int]
    requests: list[Any]  # UpdateOne for upserts, documents for insert_many
    parts: list[tuple[Document, ...]]  # what each request sends, to measure it if too large


@dataclass
class _Payload:
    """A batch encoded for MongoDB (in the parser thread)."""

    rounds: list[_Round]
    errors: list[RowError] = field(default_factory=list)  # rows BSON cannot hold
    stamped: list[Document] = field(default_factory=list)  # get updated_at when written


def connect(url: str) -> tuple[MongoClient[Document], Database[Document], dict[str, Any]]:
    """Client, default database and ``hello`` reply for ``url``; one-line errors otherwise."""
    given = {name.lower() for name, _ in parse_qsl(urlsplit(url).query)}
    options = {k: v for k, v in CLIENT_DEFAULTS.items() if k.lower() not in given}
    try:
        client: MongoClient[Document] = MongoClient(url, appname="antioom", **options)
    except InvalidURI as exc:
        raise ConfigError(f"invalid MongoDB URL {redact(url)!r}: {exc}") from None
    except ConfigurationError as exc:
        # mongodb+srv:// resolves its hosts right away: a DNS failure is an unreachable host
        if url.startswith("mongodb+srv:") and any(w in str(exc) for w in _DNS_WORDS):
            raise DatabaseUnavailable(f"cannot connect to MongoDB: {_reason(exc)}") from None
        raise ConfigError(f"invalid MongoDB URL {redact(url)!r}: {exc}") from None
    try:
        db = client.get_default_database()
    except ConfigurationError:
        client.close()
        raise ConfigError(
            f"MongoDB URL {redact(url)!r} names no database: use mongodb://host:port/dbname"
        ) from None
    try:
        hello: dict[str, Any] = client.admin.command("hello")
    except PyMongoError as exc:
        client.close()
        raise DatabaseUnavailable(f"cannot connect to MongoDB: {_reason(exc)}") from None
    return client, db, hello


class MongoSink(Sink):
    def __init__(self, url: str) -> None:
        self.client, self.db, hello = connect(url)
        self.max_bson_size = int(hello.get("maxBsonObjectSize", DEFAULT_MAX_BSON_SIZE))

    def prepare(self, dataset: Dataset, *, alter: bool = False) -> None:
        """Collections have no columns: ``alter`` has nothing to add."""
        if dataset.table.startswith("system."):
            raise TargetError(f"cannot use collection {dataset.table}: system.* is MongoDB's")
        self.dataset = dataset
        self._user_ids = any(c.name == "_id" for c in dataset.columns)
        self.collection: Collection[Document] = self.db[dataset.table]
        self.ledger: Collection[Document] = self.db[LEDGER_TABLE]
        try:
            self.ledger.create_index([("import_id", ASCENDING), ("seq", ASCENDING)], unique=True)
            if dataset.key and dataset.key != ("_id",):  # _id is always unique
                self.collection.create_index([(k, ASCENDING) for k in dataset.key], unique=True)
        except ConnectionFailure as exc:
            raise DatabaseUnavailable(f"MongoDB failed: {_reason(exc)}") from None
        except PyMongoError as exc:
            raise TargetError(
                f"cannot create a unique index on {dataset.table} ({', '.join(dataset.key)}): "
                f"{_reason(exc)}"
            ) from None

    def clear(self, table: str, *, drop: bool) -> None:
        if table.startswith("system."):
            raise TargetError(f"cannot use collection {table}: system.* is MongoDB's")
        try:
            if drop:
                self.db.drop_collection(table)
            else:
                self.db[table].delete_many({})
        except PyMongoError as exc:
            raise DatabaseLost(f"MongoDB failed: {_reason(exc)}") from None

    def encode(self, table: pa.Table) -> _Payload:
        """Build the documents and requests here, in the parser thread, so that this Python
        work overlaps the previous batch's round trip; ``write`` only stamps and sends them."""
        dataset = self.dataset
        rows: list[int] | None = None  # batch row of each row of ``table``; None: the same
        if dataset.mode == "upsert":
            last = last_rows(table, dataset.key)
            if last is not None:
                rows = last.to_pylist()
                table = table.take(last)
        names = [c.name for c in dataset.columns]
        values: dict[str, list[Any]] = {}
        bad: dict[int, str] = {}
        for column, chunked in zip(dataset.columns, table.columns, strict=True):
            values[column.name] = _bson_values(column, chunked, bad)
        batch_rows = rows if rows is not None else list(range(table.num_rows))
        errors = [RowError(batch_rows[row], reason) for row, reason in sorted(bad.items())]
        keep = [row for row in range(table.num_rows) if row not in bad] if bad else None

        def pick(items: list[Any], which: Sequence[int] | None) -> list[Any]:
            return items if which is None else [items[row] for row in which]

        if dataset.mode == "upsert":
            keys = _documents(list(dataset.key), [values[k] for k in dataset.key])
            fields = [c.name for c in dataset.value_columns]
            sets = (
                _documents(fields, [values[name] for name in fields])
                if fields
                else [dict(key) for key in keys]  # nothing else to set: $set needs a field
            )
            keys, sets = pick(keys, keep), pick(sets, keep)
            requests = [
                UpdateOne(key, {"$set": changes}, upsert=True)
                for key, changes in zip(keys, sets, strict=True)
            ]
            parts: list[tuple[Document, ...]] = [
                (key, changes) for key, changes in zip(keys, sets, strict=True)
            ]
            payload = _Payload([_Round(pick(batch_rows, keep), requests, parts)], errors)
            payload.stamped = sets if dataset.updated_at else []
            return payload
        documents = pick(_documents(names, [values[name] for name in names]), keep)
        kept_rows = pick(batch_rows, keep)
        stamped = documents if dataset.updated_at else []
        rounds = _occurrence_rounds(table, dataset.key, keep) if dataset.key else None
        if rounds is None:
            rounds = [list(range(len(documents)))]
        return _Payload(
            [
                _Round(
                    [kept_rows[i] for i in r],
                    [documents[i] for i in r],
                    [(documents[i],) for i in r],
                )
                for r in rounds
            ],
            errors,
            stamped,
        )

    def write(self, batch: Batch) -> WriteResult:
        payload = batch.payload if isinstance(batch.payload, _Payload) else None
        if payload is None:
            payload = self.encode(batch.table)
        claim = {"import_id": batch.import_id, "seq": batch.seq}
        try:
            recorded = self.ledger.find_one(claim, projection={"end_record": True})
            if recorded is not None:
                return claim_conflict(batch, recorded.get("end_record"))
            now = datetime.now(UTC)
            for document in payload.stamped:
                document[UPDATED_AT] = now
            if self.dataset.mode == "insert" and not self._user_ids:
                for round_ in payload.rounds:
                    for row, document in zip(round_.rows, round_.requests, strict=True):
                        document["_id"] = replay_id(batch.import_id, batch.record_number(row))
            errors = list(payload.errors)
            for round_ in payload.rounds:
                errors.extend(self._write_round(round_))
            entry = {
                **claim,
                "rows": batch.rows,
                "start_record": batch.start_record,
                "end_record": batch.end_record,
                "refused": len(errors),
                "committed_at": now,
            }
            before_commit(batch, errors)
            try:
                self.ledger.insert_one(entry)
            except DuplicateKeyError:  # another worker wrote and recorded it meanwhile
                recorded = self.ledger.find_one(claim, projection={"end_record": True})
                return claim_conflict(batch, recorded.get("end_record") if recorded else None)
        except ConnectionFailure as exc:
            raise DatabaseLost(f"MongoDB connection failed: {_reason(exc)}") from None
        except (PyMongoError, InvalidDocument) as exc:
            raise DatabaseLost(f"MongoDB refused the batch: {_reason(exc)}") from None
        return WriteResult(sorted(errors, key=lambda error: error.row))

    def _write_round(self, round_: _Round) -> list[RowError]:
        """Send one round unordered; the requests the server refused become row errors."""
        rows, requests, parts = round_.rows, round_.requests, round_.parts
        errors: list[RowError] = []
        while requests:
            try:
                if self.dataset.mode == "upsert":
                    self.collection.bulk_write(requests, ordered=False)
                else:
                    self.collection.insert_many(requests, ordered=False)
                return errors
            except BulkWriteError as exc:
                details = exc.details
                if details.get("writeConcernErrors"):
                    reason = details["writeConcernErrors"][0].get("errmsg", "write concern")
                    raise DatabaseLost(f"MongoDB write concern failed: {reason}") from None
                refused = [e for e in details.get("writeErrors", []) if not _replayed(e)]
                errors.extend(
                    RowError(rows[error["index"]], _first_line(error["errmsg"]))
                    for error in self._not_landed(requests, refused)
                )
                return errors
            except DocumentTooLarge:
                # Over 48 MB (the server refuses smaller ones itself): pymongo stops before
                # sending it, perhaps after sending others. Drop it and send the rest again.
                sizes = [sum(len(bson.encode(part)) for part in request) for request in parts]
                limit = self.max_bson_size
                large = {i for i, size in enumerate(sizes) if size > limit}
                if not large:
                    raise
                errors.extend(
                    RowError(rows[i], f"document too large: {sizes[i]} bytes (limit {limit})")
                    for i in sorted(large)
                )
                again = [i for i in range(len(requests)) if i not in large]
                if self.dataset.mode == "insert" and not self._user_ids:
                    # Upserts are idempotent; inserts got fresh ObjectIds from pymongo, so
                    # finding one means that very document landed.
                    ids = [requests[i]["_id"] for i in again if "_id" in requests[i]]
                    landed = {
                        d["_id"] for d in self.collection.find({"_id": {"$in": ids}}, ["_id"])
                    }
                    again = [i for i in again if requests[i].get("_id") not in landed]
                rows = [rows[i] for i in again]
                requests = [requests[i] for i in again]
                parts = [parts[i] for i in again]
        return errors

    def _not_landed(
        self, requests: list[Any], refused: list[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]]:
        """The refused inserts whose document is not already stored under its replay ``_id``.

        A replayed document collides on ``_id`` and, with a keyed dataset, on the key's unique
        index too; which one a server reports is its choice (SecantusDB reports the key). Found
        by its ``_id``, the document landed in an earlier attempt of its batch: not refused.
        """
        if self.dataset.mode != "insert" or self._user_ids:
            return refused
        ids = [
            requests[error["index"]]["_id"]
            for error in refused
            if error.get("code") == 11000 and "_id" in requests[error["index"]]
        ]
        if not ids:
            return refused
        landed = {d["_id"] for d in self.collection.find({"_id": {"$in": ids}}, ["_id"])}
        return [error for error in refused if requests[error["index"]].get("_id") not in landed]

    def committed(self, import_id: str, seqs: range = ALL_SEQS) -> Committed:
        try:
            return ledger_committed(self.db[LEDGER_TABLE], import_id, seqs)
        except PyMongoError as exc:
            raise DatabaseUnavailable(f"MongoDB failed: {_reason(exc)}") from None

    def close(self) -> None:
        self.client.close()


def ledger_committed(
    ledger: Collection[Document], import_id: str, seqs: range = ALL_SEQS
) -> Committed:
    """The ledger's totals for ``import_id``'s batches ``seqs`` (see
    :class:`~antioom.sinks.base.Committed`)."""
    span = {"$add": [{"$subtract": ["$end_record", "$start_record"]}, 1]}
    pipeline: list[dict[str, Any]] = [
        {"$match": {"import_id": import_id, "seq": {"$gte": seqs.start, "$lt": seqs.stop}}},
        {
            "$group": {
                "_id": None,
                "batches": {"$sum": 1},
                "seq": {"$max": "$seq"},
                "end": {"$max": "$end_record"},
                "rows": {"$sum": "$rows"},
                "refused": {"$sum": "$refused"},
                "spans": {"$sum": span},
                "spanned": {"$sum": {"$cond": [{"$ifNull": ["$start_record", False]}, 1, 0]}},
            }
        },
    ]
    found = list(ledger.aggregate(pipeline))
    if not found:
        return Committed()
    totals = found[0]
    return ledger_totals(
        (
            totals["batches"],
            totals["seq"],
            totals["end"],
            totals["rows"],
            totals["refused"],
            totals["spans"],
            totals["spanned"],
        )
    )


def replay_id(import_id: str, record: int) -> ObjectId:
    """The ``_id`` of the document made from input ``record``: 6 bytes of the import id's hash
    and the record number, so a batch written again after a crash (the ledger entry is written
    after the documents) finds its documents there instead of storing them twice."""
    digest = hashlib.blake2b(import_id.encode(), digest_size=6).digest()
    return ObjectId(digest + record.to_bytes(6, "big"))


def _replayed(error: Mapping[str, Any]) -> bool:
    """A duplicate ``_id`` on insert: the document landed in an earlier attempt of its batch."""
    return error.get("code") == 11000 and "_id" in (error.get("keyPattern") or {})


def _bson_values(column: Column, values: pa.ChunkedArray, bad: dict[int, str]) -> list[Any]:
    """``values`` as Python objects that pymongo encodes as the column's BSON type."""
    kind = column.type
    if kind == "integer":
        if values.null_count == 0:
            return list(map(Int64, values.to_pylist()))
        return [None if v is None else Int64(v) for v in values.to_pylist()]
    if kind in ("date", "timestamp"):
        if kind == "date":
            ms = pc.multiply(values.cast(pa.int32()).cast(pa.int64()), _MS_PER_DAY)
        else:
            floored = pc.floor_temporal(values, unit="millisecond")
            ms = floored.cast(pa.timestamp("ms")).cast(pa.int64())
        return [None if v is None else DatetimeMS(v) for v in ms.to_pylist()]
    if kind == "decimal":
        result: list[Any] = []
        for chunk in values.chunks:
            result.extend(_decimal128s(chunk, column, len(result), bad))
        return result
    return list(values.to_pylist())


def _decimal128s(
    chunk: pa.Array, column: Column, start: int, bad: dict[int, str]
) -> list[Decimal128 | None]:
    """Decimal128 straight from Arrow's 128-bit integers, 10x faster than via ``Decimal``.

    Arrow stores ``value * 10**scale`` in two's complement; BSON's BID encoding stores the
    sign, the biased exponent ``-scale`` and the absolute coefficient (< 10**34 < 2**113).
    """
    if len(chunk) == 0:
        return []
    absolute = pc.abs(chunk)
    negative = pc.less(chunk, pa.scalar(Decimal(0), chunk.type)).to_pylist()
    data = absolute.buffers()[1]
    words = pa.Array.from_buffers(
        pa.uint64(), 2 * len(absolute), [None, data], offset=2 * absolute.offset
    ).to_pylist()
    exponent = (_EXPONENT_BIAS - column.scale) << 49
    signs = (exponent, exponent | _SIGN)
    highs, lows = words[1::2], words[0::2]
    result = [
        # (high, low) BID words: documented by Decimal128, though missing from its type hints
        None if n is None else Decimal128((signs[n] | hi, lo))  # type: ignore[arg-type]
        for n, hi, lo in zip(negative, highs, lows, strict=True)
    ]
    if column.precision > DECIMAL128_DIGITS:
        limit = 10**DECIMAL128_DIGITS
        for row, (hi, lo) in enumerate(zip(highs, lows, strict=True)):
            if result[row] is not None and (hi << 64 | lo) >= limit:
                bad[start + row] = (
                    f"{column.name}: more than {DECIMAL128_DIGITS} significant digits "
                    "(BSON Decimal128)"
                )
                result[row] = None
    return result


def _documents(names: list[str], columns: list[list[Any]]) -> list[Document]:
    if len(names) == 1:  # the usual key: twice as fast
        name = names[0]
        return [{name: value} for value in columns[0]]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _occurrence_rounds(
    table: pa.Table, key: tuple[str, ...], keep: list[int] | None
) -> list[list[int]] | None:
    """Positions (in ``keep``) grouped by occurrence: first occurrences of each key, then the
    second ones, … (None when no key repeats, the usual case: a single round)."""
    if last_rows(table, key) is None:
        return None
    rows = keep if keep is not None else range(table.num_rows)
    keys = list(zip(*(table.column(k).to_pylist() for k in key), strict=True))
    seen: dict[tuple[Any, ...], int] = {}
    rounds: list[list[int]] = []
    for position, row in enumerate(rows):
        occurrence = seen.get(keys[row], 0)
        seen[keys[row]] = occurrence + 1
        if occurrence == len(rounds):
            rounds.append([])
        rounds[occurrence].append(position)
    return rounds


def _reason(exc: BaseException) -> str:
    """A one-line reason: the server's errmsg, or the driver's message without its topology."""
    if isinstance(exc, OperationFailure) and isinstance(exc.details, Mapping):
        message = exc.details.get("errmsg")
        if message:
            return _first_line(str(message))
    return _first_line(str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0])


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else "unknown error"
