"""Kill -9, Ctrl-C and resume of the real CLI on real databases (issue 8).

Every test runs ``antioom import`` as a subprocess on a CSV generated here, stops it at a
random point (seeded: ``ANTIOOM_TEST_SEED``; ``ANTIOOM_TEST_TRIALS=N`` multiplies the trials
for a soak run), resumes it, and checks the outcome against what this file computes on its
own with Python's ``csv`` module and the products rules: the table holds exactly the valid
rows (the last occurrence of each key for an upsert, the first for an insert, later ones being
refused as duplicate keys), the summary accounts for every record once, and the ``--rejects``
file names every rejected record exactly once.

MongoDB runs on SecantusDB (in this process, ~2,000 upserts/s): its files are small.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymysql  # type: ignore[import-untyped]
import pytest
from conftest import CliResult, clean_env
from pymongo import MongoClient
from test_mongo import mongo_server_url, mongo_url  # noqa: F401 - fixtures used by name
from test_mysql import mysql_url  # noqa: F401 - fixture used by name

from antioom.engine.rejects import Reject, RejectsWriter, keep_through
from antioom.sinks.mysql import connect_args
from antioom.sinks.sqlite_connection import Error as SQLiteError
from antioom.sinks.sqlite_connection import connect as connect_sqlite

Mode = Literal["insert", "upsert"]
Ledger = tuple[int, int, int]  # batches, last record committed, rows committed

SEED = int(os.environ.get("ANTIOOM_TEST_SEED") or 8)
SOAK = max(1, int(os.environ.get("ANTIOOM_TEST_TRIALS") or 1))
BATCH_SIZE = {"sqlite": 2000, "postgres": 2000, "mysql": 2000, "mongo": 200}
ROWS = {"sqlite": 100_000, "postgres": 60_000, "mysql": 40_000, "mongo": 2_000}
TRIALS = {"sqlite": 3, "postgres": 3, "mysql": 2, "mongo": 2}
SINKS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "mysql",
    "mongo",
]
TIMEOUT_S = 120.0


# --------------------------------------------------------------------------- the input


@dataclass(frozen=True)
class Products:
    """A generated products file and what importing it must produce."""

    path: Path
    records: int  # data records (a quoted newline does not start one)
    table: dict[str, tuple[str, float]]  # sku -> (name, price): the table afterwards
    committed: int  # rows the summary counts as processed
    rejected: frozenset[int]  # records rejected (validation, or a duplicate key on insert)


def _valid(sku: str, name: str, price: str) -> float | None:
    """The products rules: sku and name not blank, price a number > 0 (values are trimmed)."""
    if not sku.strip() or not name.strip():
        return None
    try:
        value = float(price.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _sku(number: int) -> str:
    """``SKU-n``, or digits with leading zeros (text: must never become a number)."""
    return f"{number:08d}" if number % 7 == 0 else f"SKU-{number}"


def _name(rng: random.Random, record: int) -> str:
    choice = rng.randrange(40)
    if choice == 0:
        return f'Name, with "quotes" {record}'
    if choice == 1:
        return f"Prodüct ✓ {record} 日本"
    if choice == 2:
        return f"  padded {record}  "
    if choice == 3:
        return f"two\nlines {record}"
    return f"Product {record}"


def _price(rng: random.Random) -> str:
    cents = rng.randint(1, 100_000)
    choice = rng.randrange(30)
    if choice == 0:
        return f"{cents // 100:04d}.{cents % 100:02d}"  # leading zeros
    if choice == 1:
        return f" {cents / 100:.2f} "
    if choice == 2:
        return f"{cents}e-2"
    return f"{cents / 100:.2f}"


def write_products(path: Path, rows: int, mode: Mode, seed: int) -> Products:
    """Write ``rows`` records of sku,name,price with ~4% invalid rows; for an upsert keys
    repeat (~3 times each, across batches), for an insert ~0.2% of the keys are used again."""
    rng = random.Random(f"{seed}-{mode}-{rows}")
    pool = max(1, rows // 3)
    used: list[str] = []
    table: dict[str, tuple[str, float]] = {}
    committed = 0
    rejected: set[int] = set()
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["sku", "name", "price"])
        for record in range(1, rows + 1):
            if mode == "upsert":
                sku = _sku(rng.randrange(pool))
            elif used and rng.random() < 0.002:
                sku = rng.choice(used)
            else:
                sku = _sku(record)
            used.append(sku)
            name, price = _name(rng, record), _price(rng)
            if rng.random() < 0.04:
                broken = rng.randrange(7)
                if broken == 0:
                    sku = ""
                elif broken == 1:
                    sku = "   "
                elif broken == 2:
                    name = ""
                elif broken == 3:
                    name = "  "
                else:
                    price = ("0", "-4.20", "abc", "0.00")[broken - 3]
            writer.writerow([sku, name, price])
            value = _valid(sku, name, price)
            key = sku.strip()
            if value is None or (mode == "insert" and key in table):
                rejected.add(record)
                continue
            table[key] = (name.strip(), value)
            committed += 1
    return Products(path, rows, table, committed, frozenset(rejected))


MakeProducts = Callable[[int, Mode], Products]


@pytest.fixture(scope="module")
def products_file(tmp_path_factory: pytest.TempPathFactory) -> MakeProducts:
    """``products_file(rows, mode)``: a generated file (one per size and mode)."""
    made: dict[tuple[int, Mode], Products] = {}
    folder = tmp_path_factory.mktemp("inputs")

    def get(rows: int, mode: Mode) -> Products:
        if (rows, mode) not in made:
            made[rows, mode] = write_products(
                folder / f"products-{mode}-{rows}.csv", rows, mode, SEED
            )
        return made[rows, mode]

    return get


# --------------------------------------------------------------------------- the databases


class Db:
    """What the CLI wrote, read without antioom: the table, the ledger, the import records."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self._conn: Any = None
        self._mongo: Any = None
        if kind == "postgres":
            self._conn = psycopg.connect(url, autocommit=True)
        elif kind == "mysql":
            self._conn = pymysql.connect(**connect_args(url), charset="utf8mb4", autocommit=True)
        elif kind == "mongo":
            self._mongo = MongoClient(url).get_default_database()

    def new_table(self) -> str:
        return f"t_{uuid.uuid4().hex[:12]}"

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with connect_sqlite(urlsplit(self.url).path[1:]) as conn:
                return conn.execute(sql.replace("%s", "?"), params).fetchall()
        if self.kind == "mysql":
            with self._conn.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        return list(self._conn.execute(sql, params).fetchall())

    def rows(self, table: str) -> list[tuple[str, str, float]]:
        if self._mongo is not None:
            documents = self._mongo[table].find({}, {"_id": 0, "sku": 1, "name": 1, "price": 1})
            return [(d["sku"], d["name"], d["price"]) for d in documents]
        return [
            (s, n, float(p)) for s, n, p in self._query(f"SELECT sku, name, price FROM {table}")
        ]

    def ledger(self, table: str) -> Ledger:
        """What the ledger holds of the imports into ``table`` (zeros if nothing yet)."""
        if self._mongo is not None:
            ids = [d["_id"] for d in self._mongo.antioom_imports.find({"table_name": table})]
            totals = list(
                self._mongo.antioom_batches.aggregate(
                    [
                        {"$match": {"import_id": {"$in": ids}}},
                        {
                            "$group": {
                                "_id": None,
                                "batches": {"$sum": 1},
                                "end": {"$max": "$end_record"},
                                "rows": {"$sum": "$rows"},
                                "refused": {"$sum": "$refused"},
                            }
                        },
                    ]
                )
            )
            if not totals:
                return (0, 0, 0)
            found = totals[0]
            return (found["batches"], found["end"], found["rows"] - found["refused"])
        rows = "b.`rows`" if self.kind == "mysql" else "b.rows"
        try:
            found = self._query(
                f"SELECT count(*), coalesce(max(b.end_record), 0), "
                f"coalesce(sum({rows}) - sum(b.refused), 0) FROM antioom_batches b "
                "JOIN antioom_imports i ON i.id = b.import_id WHERE i.table_name = %s",
                (table,),
            )[0]
        except (SQLiteError, psycopg.Error, pymysql.Error):
            return (0, 0, 0)  # no ledger or no record yet
        return (int(found[0]), int(found[1]), int(found[2]))

    def imports(self, table: str) -> list[tuple[str, str, str | None]]:
        """(id, status, owner) of every import record into ``table``."""
        if self._mongo is not None:
            found = self._mongo.antioom_imports.find({"table_name": table})
            return [(d["_id"], d["status"], d.get("owner")) for d in found]
        try:
            return [
                (str(i), str(s), o)
                for i, s, o in self._query(
                    "SELECT id, status, owner FROM antioom_imports WHERE table_name = %s",
                    (table,),
                )
            ]
        except (SQLiteError, psycopg.Error, pymysql.Error):
            return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._mongo is not None:
            self._mongo.client.close()


def _mysql_database(server_url: str) -> Iterator[str]:
    """A MySQL database of the test's own (the server's, if the user may not create one)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = pymysql.connect(**connect_args(server_url), autocommit=True)
    try:
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        except pymysql.err.OperationalError as exc:
            if exc.args[0] not in (1044, 1045):
                raise
            yield server_url
            return
        try:
            yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
        finally:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        conn.close()


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A fresh database of the kind ``request.param`` (skipped if its server is down)."""
    kind = str(getattr(request, "param", "sqlite"))
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / 'resume.db'}"
        elif kind == "postgres":
            url = str(request.getfixturevalue("pg_url"))
        elif kind == "mysql":
            databases = _mysql_database(str(request.getfixturevalue("mysql_url")))
            url = next(databases)
            stack.callback(lambda: next(databases, None))
        else:
            url = str(request.getfixturevalue("mongo_url"))
        database = Db(kind, url)
        stack.callback(database.close)
        yield database


# --------------------------------------------------------------------------- the CLI


class Cli:
    """Runs ``antioom`` in subprocesses; kills any left running when the test ends."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.command = command
        self.cwd = cwd
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], stdin: int | None = None) -> subprocess.Popen[bytes]:
        """Start ``antioom ARGS``; its output goes to files (never a pipe that could fill)."""
        name = f"run{len(self.started)}"
        with (
            open(self.cwd / f"{name}.out", "wb") as out,
            open(self.cwd / f"{name}.err", "wb") as err,
        ):
            process = subprocess.Popen(
                [*self.command, *args],
                stdin=stdin,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env=clean_env(),
            )
        self.started.append(process)
        return process

    def output(self, process: subprocess.Popen[bytes]) -> CliResult:
        name = f"run{self.started.index(process)}"
        return CliResult(
            process.returncode,
            (self.cwd / f"{name}.out").read_text("utf-8", "replace"),
            (self.cwd / f"{name}.err").read_text("utf-8", "replace"),
        )

    def run(self, args: list[str], stdin: Path | None = None) -> CliResult:
        """Run ``antioom ARGS`` to its end (a file as standard input if given)."""
        with open(stdin, "rb") if stdin else contextlib.nullcontext() as source:
            process = self.start(args, stdin=source.fileno() if source else None)
            try:
                process.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"antioom {shlex.join(args)} did not finish in {TIMEOUT_S}s")
        return self.output(process)

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def cli(antioom_command: list[str], tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(antioom_command, tmp_path)
    try:
        yield runner
    finally:
        runner.close()


def import_args(data: Products, db: Db, table: str, mode: Mode, rejects: Path) -> list[str]:
    return [
        "import",
        str(data.path),
        "--db",
        db.url,
        "--dataset",
        "products",
        "--table",
        table,
        "--mode",
        mode,
        "--batch-size",
        str(BATCH_SIZE[db.kind]),
        "--rejects",
        str(rejects),
        "--json",
    ]


def wait_for_batches(
    process: subprocess.Popen[bytes], db: Db, table: str, batches: int, cli: Cli
) -> Ledger:
    """Wait until the ledger holds ``batches`` batches of the import into ``table``."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        ledger = db.ledger(table)
        if ledger[0] >= batches:
            return ledger
        if process.poll() is not None:
            result = cli.output(process)
            pytest.fail(
                f"the import ended (exit {result.code}) before batch {batches} was committed "
                f"({ledger[0]} were): {result.stderr[-500:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no batch {batches} after {TIMEOUT_S}s")
        time.sleep(0.005)


def kill_at_random_point(
    process: subprocess.Popen[bytes],
    db: Db,
    table: str,
    rng: random.Random,
    data: Products,
    cli: Cli,
) -> Ledger:
    """SIGKILL ``process`` at a random point: after a random number of batches (within the
    first ~60% of the file) plus a random delay, or, for a first run, sometimes after a mere
    random delay (perhaps before the first commit). Returns the ledger afterwards."""
    before = db.ledger(table)[0]
    total = data.records // BATCH_SIZE[db.kind]
    if before == 0 and rng.random() < 0.2:
        time.sleep(rng.uniform(0.05, 0.5))
    else:
        wait_for_batches(
            process, db, table, before + rng.randint(1, max(1, (total - before) * 3 // 5)), cli
        )
        time.sleep(rng.uniform(0, 0.01))
    if process.poll() is not None:
        result = cli.output(process)
        pytest.fail(f"the import ended (exit {result.code}) before the kill: {result.stderr}")
    process.send_signal(signal.SIGKILL)
    assert process.wait(TIMEOUT_S) == -signal.SIGKILL, (db.ledger(table), cli.output(process))
    ledger = db.ledger(table)
    records = db.imports(table)
    assert len(records) <= 1, records
    if ledger[0]:  # a killed import stays "running", with a dead owner: resumable
        assert records[0][1] == "running", records
    return ledger


def resume_args(args: list[str], db: Db, table: str, style: str) -> tuple[list[str], str | None]:
    """``args`` with ``--resume``, or with ``--import-id ID`` read from antioom_imports;
    returns them and the id the import must keep (None: a new one)."""
    records = db.imports(table)
    known = records[0][0] if records else None
    if style == "--import-id" and known is not None:
        return [*args, "--import-id", known], known
    return [*args, "--resume"], known


# --------------------------------------------------------------------------- the checks


def rejected_records(path: Path) -> Counter[int]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["record", "line", "column", "reason", "raw"], rows[:2]
    assert all(len(row) == 5 and row[3] for row in rows[1:]), "a reject without its reason"
    return Counter(int(row[0]) for row in rows[1:])


def check_table(db: Db, table: str, data: Products) -> None:
    rows = db.rows(table)
    expected = {(sku, name, price) for sku, (name, price) in data.table.items()}
    if len(rows) == len(expected) and set(rows) == expected:
        return
    keys = Counter(sku for sku, _, _ in rows)
    duplicated = sorted(sku for sku, count in keys.items() if count > 1)
    assert not duplicated, f"{len(duplicated)} keys stored twice: {duplicated[:5]}"
    found = {sku: (name, price) for sku, name, price in rows}
    missing = sorted(set(data.table) - set(found))
    extra = sorted(set(found) - set(data.table))
    wrong = sorted(k for k in set(found) & set(data.table) if found[k] != data.table[k])
    assert not (missing or extra or wrong), (
        f"{len(missing)} rows missing {missing[:3]}, {len(extra)} unexpected {extra[:3]}, "
        f"{len(wrong)} with other values "
        f"{[(k, found[k], data.table[k]) for k in wrong[:3]]}"
    )


def check_completed(
    result: CliResult,
    db: Db,
    table: str,
    data: Products,
    rejects: Path,
    earlier: Ledger,
    import_id: str | None,
) -> dict[str, Any]:
    """The resumed run completed the import exactly: the table, the summary, the rejects."""
    assert result.code == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["status"] == "completed"
    assert summary["processed"] + summary["failed"] == summary["rows"] == data.records
    assert (summary["processed"], summary["failed"]) == (data.committed, len(data.rejected))
    batches, end_record, committed_rows = earlier
    if batches:
        assert summary["resumed_from"] == {
            "records": end_record,
            "rows": committed_rows,
            "rejected": end_record - committed_rows,
            "batches": batches,
        }
        assert end_record > 0
    else:
        assert summary["resumed_from"] is None
    if import_id is not None:
        assert summary["import_id"] == import_id
    check_table(db, table, data)
    reported = rejected_records(rejects)
    twice = sorted(record for record, count in reported.items() if count > 1)
    assert not twice, f"{len(twice)} records rejected more than once: {twice[:5]}"
    missing = sorted(data.rejected - set(reported))
    extra = sorted(set(reported) - data.rejected)
    assert not (missing or extra), (
        f"rejects file: {len(missing)} rejected records missing {missing[:5]}, "
        f"{len(extra)} records that were not rejected {extra[:5]}"
    )
    assert [(i, s) for i, s, _ in db.imports(table)] == [(summary["import_id"], "completed")]
    return summary


# --------------------------------------------------------------------------- kill -9


def _kill_and_resume(
    cli: Cli, db: Db, data: Products, mode: Mode, rng: random.Random, kills: int, style: str
) -> None:
    table = db.new_table()
    rejects = cli.cwd / f"{table}-rejects.csv"
    args = import_args(data, db, table, mode, rejects)
    process = cli.start(args)
    ledger = kill_at_random_point(process, db, table, rng, data, cli)
    for _ in range(kills - 1):  # the resumed run is killed too
        again, import_id = resume_args(args, db, table, style)
        process = cli.start(again)
        ledger = kill_at_random_point(process, db, table, rng, data, cli)
    again, import_id = resume_args(args, db, table, style)
    check_completed(cli.run(again), db, table, data, rejects, ledger, import_id)


@pytest.mark.parametrize("mode", ["insert", "upsert"])
@pytest.mark.parametrize("db", SINKS, indirect=True)
def test_kill_9_at_random_points_then_resume_lands_exactly_the_valid_rows(
    cli: Cli, db: Db, products_file: MakeProducts, mode: Mode
) -> None:
    data = products_file(ROWS[db.kind], mode)
    rng = random.Random(f"{SEED}-{db.kind}-{mode}")
    for trial in range(TRIALS[db.kind] * SOAK):
        style = ("--resume", "--import-id")[trial % 2]
        _kill_and_resume(cli, db, data, mode, rng, kills=1, style=style)


@pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_killed_twice_including_during_the_resume_then_resumed(
    cli: Cli, db: Db, products_file: MakeProducts
) -> None:
    rng = random.Random(f"{SEED}-twice-{db.kind}")
    modes: list[Mode] = ["insert", "upsert"]
    for trial, mode in enumerate(modes * SOAK):
        data = products_file(ROWS[db.kind], mode)
        style = ("--import-id", "--resume")[trial % 2]
        _kill_and_resume(cli, db, data, mode, rng, kills=2, style=style)


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_ctrl_c_prints_the_command_that_resumes_exactly(
    cli: Cli, db: Db, products_file: MakeProducts
) -> None:
    data = products_file(ROWS[db.kind], "upsert")
    table = db.new_table()
    rejects = cli.cwd / "rejects.csv"
    process = cli.start(import_args(data, db, table, "upsert", rejects))
    wait_for_batches(process, db, table, random.Random(SEED).randint(2, 8), cli)
    process.send_signal(signal.SIGINT)
    process.wait(TIMEOUT_S)
    result = cli.output(process)
    assert result.code == 130, result.stderr
    assert "Traceback" not in result.stderr
    ledger = db.ledger(table)
    [(import_id, status, _)] = db.imports(table)
    assert status == "interrupted"
    committed = re.search(r"interrupted: ([\d,]+) rows committed", result.stderr)
    assert committed, result.stderr
    assert int(committed.group(1).replace(",", "")) == ledger[2]
    hints = [line for line in result.stderr.splitlines() if line.startswith("resume with: ")]
    assert len(hints) == 1, result.stderr
    command = shlex.split(hints[0].removeprefix("resume with: "))
    assert command[:2] == ["antioom", "import"]
    assert command[-2:] == ["--import-id", import_id]
    resumed = cli.run(command[1:])
    check_completed(resumed, db, table, data, rejects, ledger, import_id)


# --------------------------------------------------------------------------- refusals


def _assert_refused(result: CliResult, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("antioom: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_what_cannot_be_resumed_is_refused_with_one_line(
    cli: Cli, db: Db, products_file: MakeProducts
) -> None:
    data = products_file(ROWS["sqlite"], "insert")
    table = db.new_table()
    rejects = cli.cwd / "rejects.csv"
    args = import_args(data, db, table, "insert", rejects)
    result = cli.run(args)
    assert result.code == 0, result.stderr
    done = json.loads(result.stdout)["import_id"]
    written = rejects.read_bytes()

    _assert_refused(cli.run([*args, "--resume"]), "completely", done)
    _assert_refused(cli.run([*args, "--import-id", done]), "already completed")
    assert rejects.read_bytes() == written, "a refused run changed the rejects file"
    stdin = ["import", "-", *args[2:]]
    _assert_refused(cli.run([*stdin, "--resume"], stdin=data.path), "needs a file path")
    check_table(db, table, data)

    # an interrupted import of a file that changed since: its id is refused
    changed = cli.cwd / "changed.csv"
    changed.write_bytes(data.path.read_bytes())
    other = db.new_table()
    other_args = import_args(data, db, other, "insert", cli.cwd / "other-rejects.csv")
    other_args[1] = str(changed)
    process = cli.start(other_args)
    wait_for_batches(process, db, other, 2, cli)
    process.kill()
    process.wait(TIMEOUT_S)
    [(interrupted, _, _)] = db.imports(other)
    written = (cli.cwd / "other-rejects.csv").read_bytes()
    with open(changed, "a", encoding="utf-8") as handle:
        handle.write("SKU-appended,Appended,1.00\n")
    _assert_refused(cli.run([*other_args, "--import-id", interrupted]), "changed since")
    assert (cli.cwd / "other-rejects.csv").read_bytes() == written


# --------------------------------------------------------------------------- live or stale


def test_a_live_import_is_refused_and_a_dead_ones_record_is_resumed(
    cli: Cli, db: Db, products_file: MakeProducts
) -> None:
    """A running CLI (here waiting for more standard input) owns its import: a second
    process with its id is refused. Killed, its record stays "running" with a dead owner,
    and the same id resumes it."""
    data = products_file(ROWS["sqlite"], "upsert")
    table = db.new_table()
    rejects = cli.cwd / "rejects.csv"
    args = import_args(data, db, table, "upsert", rejects)
    args[1] = "-"
    content = data.path.read_bytes()
    live = cli.start(args, stdin=subprocess.PIPE)
    assert live.stdin is not None
    sent, step = 0, 9 << 18  # Arrow parses a 1 MiB block once the next one is in: 2.25 MiB
    while db.ledger(table)[0] == 0:  # feed it until a batch is committed
        assert sent < len(content) * 4 // 5, "no batch committed from 80% of the input"
        live.stdin.write(content[sent : sent + step])
        live.stdin.flush()
        sent, step = sent + step, 1 << 18
        deadline = time.monotonic() + 0.5
        while db.ledger(table)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    ledger = db.ledger(table)
    while True:  # until it has committed what it can and waits for more input
        time.sleep(0.3)
        if db.ledger(table) == ledger:
            break
        ledger = db.ledger(table)
    [(import_id, status, owner)] = db.imports(table)
    assert status == "running"
    assert owner is not None and owner.split(":")[1] == str(live.pid)
    written = rejects.read_bytes()

    _assert_refused(cli.run([*args, "--import-id", import_id], stdin=data.path), "is running")
    from_file = [*args[:1], str(data.path), *args[2:], "--import-id", import_id]
    _assert_refused(cli.run(from_file), "is running")
    assert rejects.read_bytes() == written, "a refused run changed the live import's rejects"
    assert live.poll() is None

    live.kill()
    live.wait(TIMEOUT_S)
    live.stdin.close()
    assert db.imports(table) == [(import_id, "running", owner)]
    stale = db.ledger(table)
    result = cli.run([*args, "--import-id", import_id], stdin=data.path)
    check_completed(result, db, table, data, rejects, stale, import_id)


# --------------------------------------------------------------------------- the rejects file


@pytest.mark.parametrize("cut", ["in the record number", "in a character", "in a quoted value"])
def test_a_rejects_file_cut_mid_row_by_a_kill_keeps_only_whole_rows(
    tmp_path: Path, cut: str
) -> None:
    """kill -9 can stop the rejects file anywhere (Python's buffer reaches the disk in 8 KiB
    pieces): resuming after record 1000 keeps the whole rows up to it, and nothing of a row
    cut off, whatever its first bytes look like."""
    path = tmp_path / "rejects.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = RejectsWriter(out)
        writer.write(Reject(999, "sku", "required value is missing", {"sku": "", "name": "a"}))
        writer.write(Reject(1000, None, "duplicate key", {}))
        writer.flush()
        kept = path.read_bytes()
        writer.write(Reject(123456, "name", "ünïcode ✓", {"sku": "X", "name": "two\nlines"}))
        writer.flush()
    whole = path.read_bytes()
    row = whole[len(kept) :]
    at = {
        "in the record number": 3,  # "123": would pass for a record up to 1000
        "in a character": row.index("✓".encode()) + 1,
        "in a quoted value": row.index(b"\n") + 1,  # just after the newline inside quotes
    }[cut]
    path.write_bytes(kept + row[:at])
    keep_through(path, 1000)
    assert path.read_bytes() == kept
