"""Queued imports on real workers: ``antioom import --queue`` (or ``antioom serve --staging``,
for uploads) stages a file and queues it, ``antioom worker`` processes (Celery, on a real
RabbitMQ or Redis) split it into parts and import them side by side into a real database.

Every test purges the ``antioom`` queue, starts its own workers (killed when it ends), queues a
generated file into a fresh table with a fresh staging directory, waits for the import's
record to reach a final status, and checks the outcome against what the generator knows: the
table holds exactly the valid rows, the record accounts for every record once, the rejects are
stored once each, the ledger closed every part, and the staged object is gone.

The inputs are described in worker_helpers.py: every row is a function of its record number,
and past the first few hundred records some prices are ``n/a`` (rejected: the price column is
inferred from the first block as a number). Kill trials are seeded: ``ANTIOOM_TEST_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import psycopg
import pymysql  # type: ignore[import-untyped]
import pytest
from conftest import antioom_command, fetch
from pymongo import MongoClient
from s3_server import S3_TEST_ENV, moto_server, s3_client
from server_helpers import curl, serve
from test_mongo import mongo_server_url, mongo_url  # noqa: F401 - fixtures used by name
from test_mysql import mysql_url  # noqa: F401 - fixture used by name
from worker_helpers import (
    AMQP_BROKER,
    FINAL,
    PART_SEQS,
    REDIS_BROKER,
    Products,
    Workers,
    cents_of,
    name_of,
    no_other_consumers,
    purge,
    queue_depth,
    queue_import,
    record_of,
    rejects_of,
    require_broker,
    wait_for_consumers,
    wait_until_final,
    write_products,
)

from antioom.history import open_store
from antioom.sinks.mysql import connect_args
from antioom.sinks.sqlite_connection import connect as connect_sqlite
from antioom.workers.jobs import PROGRESS_S

SEED = int(os.environ.get("ANTIOOM_TEST_SEED") or 8)
KILL_TRIALS = 3
BIG_RECORDS = 2_900_000  # ~100 MB: four parts of ~25 MB
MID_RECORDS = 1_600_000  # ~55 MB: three parts of ~18 MB
FAT_RECORDS = 4_450  # ~34 MiB of 8 kB rows: two parts of 16 MiB, few rows (MongoDB is slow)
FAT_PAD = 8_000


# --------------------------------------------------------------------------- the inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def big_products(inputs: Path) -> Products:
    """~100 MB, 2.9 million records, ~480 of them rejected (shared by the PostgreSQL tests)."""
    return write_products(inputs / "big.csv", BIG_RECORDS, reject_every=6007, clean=100_000)


@pytest.fixture(scope="module")
def mid_products(inputs: Path) -> Products:
    """~55 MB, 1.6 million records (three parts of ~18 MB), ~500 of them rejected: the kill
    trials' input, big enough that each part takes a few seconds."""
    return write_products(inputs / "mid.csv", MID_RECORDS, reject_every=3001, clean=100_000)


@pytest.fixture(scope="module")
def fat_products(inputs: Path) -> Products:
    """~34 MiB in 4,450 fat records (two parts), ~50 of them rejected."""
    data = write_products(inputs / "fat.csv", FAT_RECORDS, reject_every=89, pad=FAT_PAD)
    assert data.size > 32 << 20
    return data


@pytest.fixture(scope="module")
def keyed_products(inputs: Path) -> Products:
    """~34 MiB in 4,450 fat records of 1,000 keys (each ~4 times, far apart), ~50 rejected."""
    data = write_products(
        inputs / "keyed.csv", FAT_RECORDS, reject_every=89, pad=FAT_PAD, keys=1000
    )
    assert data.size > 32 << 20
    return data


@pytest.fixture
def workers_on(tmp_path: Path) -> Iterator[Any]:
    """``workers_on(broker, **env)``: a :class:`Workers` on ``broker`` (its queue purged first);
    every worker started is killed when the test ends, and the logs are printed (pytest shows
    them when the test failed)."""
    made: list[Workers] = []

    def make(broker: str, **env: str) -> Workers:
        require_broker(broker)
        purge(broker)
        if broker.startswith("amqp"):
            no_other_consumers(broker)
        folder = tmp_path / f"workers{len(made)}"
        folder.mkdir()
        workers = Workers(broker, folder, **env)
        made.append(workers)
        return workers

    try:
        yield make
    finally:
        for workers in made:
            print(workers.logs())
            workers.close()


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    folder = tmp_path / "staging"
    folder.mkdir()
    return folder


def file_url(folder: Path) -> str:
    return f"file://{quote(str(folder))}"


def new_table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- the databases


@pytest.fixture
def mysql_db(mysql_url: str) -> Iterator[str]:  # noqa: F811 - the fixture imported above
    """A MySQL database of the test's own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = pymysql.connect(**connect_args(mysql_url), autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        try:
            yield urlunsplit(urlsplit(mysql_url)._replace(path="/" + name))
        finally:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        conn.close()


def table_rows(url: str, table: str) -> dict[str, tuple[str, int]]:
    """sku -> (name, price in cents) of every row of ``table``, read without antioom; fails
    if a sku is there twice."""
    scheme = urlsplit(url).scheme
    if scheme == "mongodb":
        client: MongoClient[dict[str, Any]] = MongoClient(url)
        try:
            found = [
                (d["sku"], d["name"], d["price"])
                for d in client.get_default_database()[table].find({}, {"_id": 0})
            ]
        finally:
            client.close()
    elif scheme == "mysql":
        conn = pymysql.connect(**connect_args(url), charset="utf8mb4")
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"SELECT sku, name, price FROM {table}")
                found = list(cursor.fetchall())
        finally:
            conn.close()
    elif scheme == "sqlite":
        with connect_sqlite(urlsplit(url).path[1:]) as conn:
            found = conn.execute(f"SELECT sku, name, price FROM {table}").fetchall()
    else:
        found = fetch(url, f"SELECT sku, name, price FROM {table}")
    rows = {sku: (name, round(float(price) * 100)) for sku, name, price in found}
    twice = [sku for sku, n in Counter(sku for sku, _, _ in found).items() if n > 1]
    assert not twice, f"{len(twice)} skus stored more than once: {twice[:5]}"
    return rows


def check_table(url: str, table: str, data: Products) -> None:
    """The table holds exactly the file's valid rows (small files: compared row by row)."""
    found = table_rows(url, table)
    expected = data.expected()
    if found == expected:
        return
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
    pytest.fail(
        f"{len(missing)} rows missing {missing[:3]}, {len(extra)} unexpected {extra[:3]}, "
        f"{len(wrong)} with other values {[(k, found[k], expected[k]) for k in wrong[:3]]}"
    )


def check_big_table(url: str, table: str, data: Products) -> None:
    """The PostgreSQL table holds exactly the big file's valid rows, checked in the database in
    one scan: as many rows as valid records, whose record numbers (and their squares) add up as
    the valid ones do (a row stored twice, or one missing, shows), none of a rejected record,
    and every name and price the one the generator wrote for that number."""
    assert data.pad == 0
    valid = [i for i in range(1, data.records + 1) if i not in data.rejected]
    [found] = fetch(
        url,
        "SELECT count(*), sum(n), sum(n * n), min(n), max(n), "
        "count(*) FILTER (WHERE n IN (SELECT unnest(%s::bigint[]))), "
        "count(*) FILTER (WHERE name IS DISTINCT FROM CASE "
        """  WHEN mod(n, 50) = 0 THEN 'Name, with "quotes" ' || n """
        "  WHEN mod(n, 97) = 0 THEN 'two' || chr(10) || 'lines ' || n "
        "  WHEN mod(n, 113) = 0 THEN 'Prodüct ✓ ' || n "
        "  ELSE 'Product ' || n END "
        "  OR round(price * 100)::bigint IS DISTINCT FROM mod(n * 7919, 100000) + 1) "
        f"FROM (SELECT substr(sku, 5)::bigint AS n, name, price FROM {table}) AS t",
        (sorted(data.rejected),),
    )
    expected = (
        len(valid),
        sum(valid),
        sum(i * i for i in valid),
        valid[0],
        valid[-1],
        0,
        0,
    )
    assert tuple(int(v) for v in found) == expected, (
        "(rows, sum and sum of squares of the record numbers, first, last, rejected records "
        f"stored, rows with other values): {found} where {expected} was expected"
    )


def check_record(record: dict[str, Any], data: Products) -> None:
    """The record accounts for every record of the file once."""
    assert record["status"] == "completed", record
    assert record["error"] is None, record
    assert record["rows"] == data.records, record
    assert record["processed"] == data.valid, record
    assert record["failed"] == len(data.rejected), record
    assert record["processed"] + record["failed"] == record["rows"]
    assert record["batches"] > 0, record
    assert record["bytes"] == data.size, record


def check_rejects(url: str, import_id: str, data: Products) -> None:
    """Every rejected record is stored once (fewer than the import keeps), as "not a number"."""
    stored = rejects_of(url, import_id)
    counted = Counter(int(reject[0]) for reject in stored)
    twice = sorted(record for record, n in counted.items() if n > 1)
    assert not twice, f"rejects stored more than once: {twice[:10]}"
    assert set(counted) == data.rejected, (
        f"missing {sorted(data.rejected - set(counted))[:5]}, "
        f"unexpected {sorted(set(counted) - data.rejected)[:5]}"
    )
    assert {(reject[2], reject[3]) for reject in stored} == {("price", "not a number")}


def closed_parts(url: str, import_id: str, parts: int) -> int:
    store = open_store(url)
    try:
        return store.closed_parts(import_id, [(k + 1) * PART_SEQS - 1 for k in range(parts)])
    finally:
        store.close()


def pg_ledger(url: str, import_id: str) -> list[tuple[int, int, int, int]]:
    """(seq, rows, start_record, end_record) of the import's ledger rows, in seq order."""
    return [
        (int(s), int(r), int(a), int(b))
        for s, r, a, b in fetch(
            url,
            "SELECT seq, rows, start_record, end_record FROM antioom_batches "
            "WHERE import_id = %s ORDER BY seq",
            (import_id,),
        )
    ]


def staged_objects(folder: Path, timeout: float = 5) -> list[str]:
    """The staged objects left in ``folder``, once they are gone or ``timeout`` passed (a
    one-part import saves its final record, then deletes its object)."""
    deadline = time.monotonic() + timeout
    while (left := sorted(p.name for p in folder.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def wait_for_batches(url: str, import_id: str, batches: int, workers: Workers) -> int:
    """Wait until the ledger holds ``batches`` rows of the import (PostgreSQL); fail if the
    import ends first."""
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            [(status,)] = conn.execute(
                "SELECT status FROM antioom_imports WHERE id = %s", (import_id,)
            ).fetchall()
            try:
                [(found,)] = conn.execute(
                    "SELECT count(*) FROM antioom_batches WHERE import_id = %s", (import_id,)
                ).fetchall()
            except psycopg.errors.UndefinedTable:  # no batch yet
                found = 0
            if found >= batches:
                return int(found)
            if status in FINAL:
                pytest.fail(f"the import ended {status} before batch {batches}")
            time.sleep(0.005)
    pytest.fail(f"no batch {batches} of {import_id} after 120 s\n{workers.logs()}")


# --------------------------------------------------------------------------- the tests


def test_several_workers_on_one_host_all_take_jobs(workers_on: Any) -> None:
    """Workers started side by side on one machine (as the docs invite: "start as many as you
    like") each consume the queue."""
    workers = workers_on(AMQP_BROKER)
    workers.start(2)
    consumers = wait_for_consumers(AMQP_BROKER, 2, workers)
    time.sleep(1)
    assert len(workers.live()) == 2, workers.logs()
    assert consumers == 2


def test_three_workers_import_a_100mb_file_in_four_parts_exactly(
    big_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """A 100 MB insert without a key is split into four parts that three workers import side
    by side; the last one to finish saves the completed record from the ledger."""
    workers = workers_on(AMQP_BROKER)
    workers.start(1, concurrency=2)  # parts run side by side even in one process
    wait_for_consumers(AMQP_BROKER, 1, workers)
    workers.start(2)
    table = new_table()
    started = time.monotonic()
    queued = queue_import(
        big_products.path, pg_url, file_url(staging), AMQP_BROKER, "--table", table, "--parts", "4"
    )
    import_id = queued["import_id"]
    assert record_of(pg_url, import_id)["source_bytes"] == big_products.size  # all staged

    record = wait_until_final(pg_url, import_id, workers)
    print(f"100 MB in four parts: {time.monotonic() - started:.1f} s")
    started = time.monotonic()

    check_record(record, big_products)
    check_big_table(pg_url, table, big_products)
    check_rejects(pg_url, import_id, big_products)
    ledger = pg_ledger(pg_url, import_id)
    closing = [row for row in ledger if (row[0] + 1) % PART_SEQS == 0]
    assert [(seq, rows) for seq, rows, _, _ in closing] == [
        ((k + 1) * PART_SEQS - 1, 0) for k in range(4)
    ], "one closing row of no rows at each part's last seq"
    assert [end for _, _, _, end in closing][-1] == big_products.records
    assert all(seq < 4 * PART_SEQS for seq, _, _, _ in ledger)
    assert record["batches"] == len(ledger) - 4, "the closing rows are no batches"
    assert staged_objects(staging) == [], "the staged object is deleted once imported"
    print(f"checked in {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("trial", range(KILL_TRIALS))
def test_workers_killed_mid_part_leave_the_import_exact(
    trial: int, mid_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """kill -9 of a worker (sometimes of two, one after the other) while parts are running
    (in the first trial, the first kill comes early: most likely while the job is planned):
    the broker redelivers the dead worker's jobs, which are queued again as a next attempt and
    resume after the batches the ledger holds; the import completes with every row once and
    every reject stored once."""
    rng = random.Random(f"{SEED}-kill-{trial}")
    workers = workers_on(AMQP_BROKER)
    workers.start(1, concurrency=2)
    wait_for_consumers(AMQP_BROKER, 1, workers)
    workers.start(1)
    # Both consume before the parts are queued: three slots for three parts, so that whichever
    # worker is killed while parts run holds one (a worker still starting would hold none).
    assert wait_for_consumers(AMQP_BROKER, 2, workers) == 2, workers.logs()
    table = new_table()
    queued = queue_import(
        mid_products.path, pg_url, file_url(staging), AMQP_BROKER, "--table", table, "--parts", "3"
    )
    import_id = queued["import_id"]
    total = mid_products.records // 20_000  # batches of the default 20,000 rows
    committed = 0
    for kill in range(rng.choice((1, 1, 2))):
        if trial == 0 and kill == 0:
            time.sleep(rng.uniform(0.2, 1.0))
        else:
            target = committed + rng.randint(1, max(1, (total - committed) * 2 // 5))
            committed = wait_for_batches(pg_url, import_id, target, workers)
            time.sleep(rng.uniform(0, 0.05))
        victim = rng.choice(workers.live())
        consumers = queue_depth(AMQP_BROKER)[1]
        workers.kill(victim)
        committed = wait_for_batches(pg_url, import_id, 0, workers)
        print(f"trial {trial}: kill {kill + 1} after {committed} batches")
        # Once the broker has seen the connection close, it redelivers the victim's parts.
        deadline = time.monotonic() + 10
        while queue_depth(AMQP_BROKER)[1] >= consumers and time.monotonic() < deadline:
            time.sleep(0.05)
        workers.start(1)

    record = wait_until_final(pg_url, import_id, workers)

    assert "redelivered, attempt 2" in workers.logs(tail=100_000)
    check_record(record, mid_products)
    check_big_table(pg_url, table, mid_products)
    check_rejects(pg_url, import_id, mid_products)
    assert closed_parts(pg_url, import_id, 3) == 3
    assert staged_objects(staging) == []


@pytest.mark.parametrize("kind", ["mysql", "mongo"])
def test_two_workers_import_parts_into_mysql_and_mongodb(
    kind: str,
    request: pytest.FixtureRequest,
    fat_products: Products,
    staging: Path,
    workers_on: Any,
) -> None:
    """Parts land exactly in MySQL and MongoDB too (two parts, two workers)."""
    db = str(request.getfixturevalue("mysql_db" if kind == "mysql" else "mongo_url"))
    workers = workers_on(AMQP_BROKER)
    workers.start(2)
    table = new_table()
    queued = queue_import(
        fat_products.path,
        db,
        file_url(staging),
        AMQP_BROKER,
        "--table",
        table,
        "--batch-size",
        "200",
    )
    record = wait_until_final(db, queued["import_id"], workers)

    check_record(record, fat_products)
    check_table(db, table, fat_products)
    check_rejects(db, queued["import_id"], fat_products)
    assert closed_parts(db, queued["import_id"], 2) == 2, "the file was split in two parts"
    assert staged_objects(staging) == []


def test_one_worker_imports_the_parts_into_sqlite(
    fat_products: Products, tmp_path: Path, staging: Path, workers_on: Any
) -> None:
    """SQLite has one writer: one worker imports the parts one after the other."""
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    workers = workers_on(AMQP_BROKER)
    workers.start(1)
    table = new_table()
    queued = queue_import(fat_products.path, db, file_url(staging), AMQP_BROKER, "--table", table)
    record = wait_until_final(db, queued["import_id"], workers)

    check_record(record, fat_products)
    check_table(db, table, fat_products)
    check_rejects(db, queued["import_id"], fat_products)
    assert closed_parts(db, queued["import_id"], 2) == 2
    assert staged_objects(staging) == []


def test_workers_on_a_redis_broker(
    fat_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """The same with Redis as the broker."""
    workers = workers_on(REDIS_BROKER)
    workers.start(2)
    table = new_table()
    queued = queue_import(
        fat_products.path, pg_url, file_url(staging), REDIS_BROKER, "--table", table
    )
    record = wait_until_final(pg_url, queued["import_id"], workers)

    check_record(record, fat_products)
    check_table(pg_url, table, fat_products)
    check_rejects(pg_url, queued["import_id"], fat_products)
    assert closed_parts(pg_url, queued["import_id"], 2) == 2
    assert staged_objects(staging) == []
    assert len(workers.live()) == 2, workers.logs()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def test_workers_read_parts_from_s3_staging(
    fat_products: Products,
    pg_url: str,
    s3_endpoint: str,
    workers_on: Any,
) -> None:
    """Staged in S3 (moto here): the workers read their parts with ranged GETs, and the object
    is deleted once imported. The AWS settings are in the workers' environment too."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=bucket)
    staging = f"s3://{bucket}/queued?endpoint_url={s3_endpoint}"
    workers = workers_on(AMQP_BROKER, **S3_TEST_ENV)
    workers.start(2)
    table = new_table()
    queued = queue_import(
        fat_products.path, pg_url, staging, AMQP_BROKER, "--table", table, env=S3_TEST_ENV
    )
    record = wait_until_final(pg_url, queued["import_id"], workers)

    check_record(record, fat_products)
    check_table(pg_url, table, fat_products)
    check_rejects(pg_url, queued["import_id"], fat_products)
    assert closed_parts(pg_url, queued["import_id"], 2) == 2
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def split_import(data: Products, pg_url: str, staging: Path, workers: Workers) -> dict[str, Any]:
    """The completed record of ``data`` imported in two parts by one worker."""
    workers.start(1)
    queued = queue_import(data.path, pg_url, file_url(staging), AMQP_BROKER, "--table", new_table())
    record = wait_until_final(pg_url, queued["import_id"], workers)
    assert record["status"] == "completed", record
    assert closed_parts(pg_url, queued["import_id"], 2) == 2
    assert len(rejects_of(pg_url, queued["import_id"])) == len(data.rejected)
    assert record["started_at"] == queued["started_at"], "it started when it was queued"
    return record


def test_a_split_import_s_record_says_how_many_rejects_it_kept(
    fat_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """``rejects_kept`` says how many of the ``failed`` rows are stored, as for one part."""
    record = split_import(fat_products, pg_url, staging, workers_on(AMQP_BROKER))
    assert record["rejects_kept"] == len(fat_products.rejected), record


def test_a_split_import_s_record_says_how_long_it_took(
    fat_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """The completed record's duration is the time from its start to its end, and its rate
    the records per second over it, as for an import in one part."""
    record = split_import(fat_products, pg_url, staging, workers_on(AMQP_BROKER))
    assert record["started_at"] < record["finished_at"]
    assert record["duration_s"] > 0, record
    assert record["rows_per_s"] > 0, record


def one_part_ledger(url: str, import_id: str) -> list[tuple[int, int, int, int]]:
    """The ledger of an import that ran as one part: seqs from 0, no closing row."""
    ledger = pg_ledger(url, import_id)
    assert ledger, "no batch"
    assert all(seq < PART_SEQS - 1 for seq, _, _, _ in ledger), f"not one part: {ledger[-3:]}"
    return ledger


def test_an_upsert_runs_as_one_part_and_the_last_row_wins(
    keyed_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """The products dataset upserts by sku: which of two rows of one key wins must not depend
    on timing, so the file (big enough for two parts) is imported as one, in order."""
    data = keyed_products
    workers = workers_on(AMQP_BROKER)
    workers.start(2)
    table = new_table()
    queued = queue_import(
        data.path,
        pg_url,
        file_url(staging),
        AMQP_BROKER,
        "--dataset",
        "products",
        "--table",
        table,
        "--batch-size",
        "200",
    )
    record = wait_until_final(pg_url, queued["import_id"], workers)

    check_record(record, data)
    check_table(pg_url, table, data)  # the last valid row of each sku
    check_rejects(pg_url, queued["import_id"], data)
    assert record["batches"] == len(one_part_ledger(pg_url, queued["import_id"]))
    assert record["rejects_kept"] == len(data.rejected)
    assert staged_objects(staging) == []


def test_a_keyed_insert_runs_as_one_part_and_the_first_row_wins(
    keyed_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """An insert with a key keeps each key's first row and refuses the later ones as duplicate
    keys: one part, in order, so that "first" is the file's."""
    data = keyed_products
    workers = workers_on(AMQP_BROKER)
    workers.start(2)
    table = new_table()
    queued = queue_import(
        data.path, pg_url, file_url(staging), AMQP_BROKER, "--table", table, "--key", "sku"
    )
    record = wait_until_final(pg_url, queued["import_id"], workers)

    first: dict[str, tuple[str, int]] = {}
    duplicates = set()
    for i in range(1, data.records + 1):
        if i in data.rejected:
            continue
        if data.sku_of(i) in first:
            duplicates.add(i)
        else:
            first[data.sku_of(i)] = (name_of(i, data.pad), cents_of(i))
    assert table_rows(pg_url, table) == first
    assert record["status"] == "completed", record
    assert (record["rows"], record["processed"], record["failed"]) == (
        data.records,
        len(first),
        len(data.rejected) + len(duplicates),
    )
    stored = [int(reject[0]) for reject in rejects_of(pg_url, queued["import_id"])]
    assert len(stored) == len(set(stored)) == record["rejects_kept"] == 1000, "1,000 are kept"
    assert set(stored) <= data.rejected | duplicates
    assert record["batches"] == len(one_part_ledger(pg_url, queued["import_id"]))
    assert staged_objects(staging) == []


def test_a_limited_import_runs_as_one_part(
    fat_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """``--limit N`` imports the file's first N records: one part, from the start."""
    workers = workers_on(AMQP_BROKER)
    workers.start(2)
    table = new_table()
    limit = ("--limit", "1000")
    queued = queue_import(
        fat_products.path, pg_url, file_url(staging), AMQP_BROKER, "--table", table, *limit
    )
    record = wait_until_final(pg_url, queued["import_id"], workers)

    limited = Products(
        fat_products.path,
        1000,
        frozenset(i for i in fat_products.rejected if i <= 1000),
        fat_products.pad,
    )
    check_table(pg_url, table, limited)
    assert record["status"] == "completed", record
    assert (record["rows"], record["processed"], record["failed"]) == (
        1000,
        limited.valid,
        len(limited.rejected),
    )
    check_rejects(pg_url, queued["import_id"], limited)
    one_part_ledger(pg_url, queued["import_id"])


def test_a_job_that_cannot_succeed_fails_once_with_its_reason(
    write_csv: Any, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """A file that lacks the dataset's required columns ends ``failed`` with a one-line reason;
    it is not retried (the queue is empty afterwards, the record stays failed)."""
    path = write_csv("sku,title\nA-1,one\nA-2,two\n", "missing.csv")
    workers = workers_on(AMQP_BROKER)
    workers.start(1)
    queued = queue_import(
        path, pg_url, file_url(staging), AMQP_BROKER, "--dataset", "products", "--table", "t"
    )
    record = wait_until_final(pg_url, queued["import_id"], workers)
    assert record["status"] == "failed", record
    assert "lacks required column(s) name, price" in record["error"]
    assert "\n" not in record["error"]
    assert record["processed"] == 0
    time.sleep(1.5)
    again = record_of(pg_url, queued["import_id"])
    assert again is not None and (again["status"], again["error"]) == ("failed", record["error"])
    assert queue_depth(AMQP_BROKER)[0] == 0, "nothing queued again"
    assert len(workers.live()) == 1, workers.logs()

    # Its id is used: neither queued again nor resumed in one pass (its ledger is in parts).
    import_id = queued["import_id"]
    for extra in (["--queue", "--staging", file_url(staging), "--broker", AMQP_BROKER], []):
        done = subprocess.run(
            [
                *antioom_command(),
                "import",
                str(path),
                "--db",
                pg_url,
                "--table",
                "t",
                "--import-id",
                import_id,
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"import {import_id}" in done.stderr and "choose another import id" in done.stderr
        assert "Traceback" not in done.stderr
    assert staged_objects(staging) == [], "refused before staging anything"


def test_a_job_whose_staged_object_is_gone_fails_with_its_reason(
    fat_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """The staged object deleted before a worker took the job: the import ends ``failed``
    saying so, instead of being retried."""
    workers = workers_on(AMQP_BROKER)  # no worker yet: the job waits in the queue
    queued = queue_import(
        fat_products.path, pg_url, file_url(staging), AMQP_BROKER, "--table", new_table()
    )
    for staged in staging.iterdir():
        staged.unlink()
    workers.start(1)
    record = wait_until_final(pg_url, queued["import_id"], workers)
    assert record["status"] == "failed", record
    assert "no staged object" in record["error"], record
    assert queue_depth(AMQP_BROKER)[0] == 0


def test_a_failed_import_s_staged_object_is_deleted(
    write_csv: Any, pg_url: str, staging: Path, workers_on: Any
) -> None:
    path = write_csv("sku,title\nA-1,one\n", "missing.csv")
    workers = workers_on(AMQP_BROKER)
    workers.start(1)
    queued = queue_import(
        path, pg_url, file_url(staging), AMQP_BROKER, "--dataset", "products", "--table", "t"
    )
    assert wait_until_final(pg_url, queued["import_id"], workers)["status"] == "failed"
    assert staged_objects(staging) == []


def test_a_part_whose_workers_keep_dying_is_given_up_after_five_attempts(
    fat_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """A job that kills its worker every time (here: kill -9 as soon as it commits a batch)
    is tried five times, then the import ends ``failed`` with the reason and the counts its
    ledger proves; it is not queued again."""
    workers = workers_on(AMQP_BROKER)
    queued = queue_import(
        fat_products.path,
        pg_url,
        file_url(staging),
        AMQP_BROKER,
        "--table",
        new_table(),
        "--parts",
        "1",
        "--batch-size",
        "50",
    )
    import_id = queued["import_id"]
    committed = 0
    for _attempt in range(5):
        [worker] = workers.start(1)
        wait_for_batches(pg_url, import_id, committed + 1, workers)  # this attempt runs
        workers.kill(worker)
        committed = wait_for_batches(pg_url, import_id, 0, workers)  # what it committed
        deadline = time.monotonic() + 10  # the broker sees it gone, and takes the job back
        while queue_depth(AMQP_BROKER)[1] and time.monotonic() < deadline:
            time.sleep(0.05)
    workers.start(1)
    record = wait_until_final(pg_url, import_id, workers)

    assert record["status"] == "failed", record
    assert "part 1 of 1 was given up after 5 attempts" in record["error"], record
    [(rows, batches)] = fetch(
        pg_url,
        "SELECT sum(rows) - sum(refused), count(*) FROM antioom_batches WHERE import_id = %s",
        (import_id,),
    )
    assert (record["processed"], record["batches"]) == (rows, batches)
    assert 0 < rows < fat_products.valid
    time.sleep(1)
    assert queue_depth(AMQP_BROKER)[0] == 0, "nothing queued again"


# --------------------------------------------------------------------------- staged uploads
# antioom serve --staging URL --broker URL streams an upload to the staging storage, queues it
# and answers 202 with the queued record; the record lives in the database, so any server
# process of the fleet reports the import's progress, not only the one that took the upload.


@pytest.fixture
def two_servers(tmp_path: Path, pg_url: str, staging: Path) -> Iterator[tuple[Any, Any]]:
    """Two server processes sharing the database, the staging directory and the broker."""
    options = ("--staging", file_url(staging), "--broker", AMQP_BROKER)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        serve(tmp_path / "a", *options, db_url=pg_url) as first,
        serve(tmp_path / "b", *options, db_url=pg_url) as second,
    ):
        yield first, second


def upload(url: str, path: Path, *headers: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST the file with curl: (status, headers, JSON body)."""
    args: list[str | Path] = ["-X", "POST", "--data-binary", f"@{path}", "-D", "-"]
    for header in ("Content-Type: text/csv", *headers):
        args += ["-H", header]
    done = curl(*args, url)
    head, _, body = done.stdout.replace("\r\n", "\n").partition("\n\n")
    while head.startswith("HTTP/1.1 100"):  # curl's Expect: 100-continue
        head, _, body = body.partition("\n\n")
    status = int(head.split()[1])
    fields = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    return status, {k.lower(): v for k, v in fields.items()}, json.loads(body)


def events(url: str, timeout: float = 150) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of an SSE stream, read until it ends."""
    found = []
    name = "message"
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                found.append((name, json.loads(line.split(":", 1)[1])))
                name = "message"
    return found


def test_an_upload_taken_by_one_server_is_followed_from_another(
    two_servers: tuple[Any, Any],
    fat_products: Products,
    pg_url: str,
    staging: Path,
    workers_on: Any,
) -> None:
    """The upload is answered 202 (the queued record, its Location) once staged; the other
    server's SSE follows it from the database to ``completed``, and both servers' records and
    the table say what one process would have imported."""
    first, second = two_servers
    workers = workers_on(AMQP_BROKER)
    workers.start(2)
    table = new_table()
    import_id = f"staged-{uuid.uuid4().hex[:8]}"

    status, headers, queued = upload(
        f"{first.url}/imports?table={table}",
        fat_products.path,
        f"X-Import-Id: {import_id}",
        "X-File-Name: fat.csv",
    )

    assert status == 202, queued
    assert headers["location"] == f"/imports/{import_id}"
    assert queued["status"] == "queued"
    assert queued["source_bytes"] == fat_products.size
    assert queued["source"] == "fat.csv"
    again, _, refused = upload(
        f"{first.url}/imports?table={table}", fat_products.path, f"X-Import-Id: {import_id}"
    )
    assert again == 409, refused  # queued, running in parts, or done: never imported twice

    seen = events(f"{second.url}/imports/{import_id}/events")
    assert seen[-1][0] == "completed", seen
    assert seen[-1][1]["processed"] == fat_products.valid
    assert seen[-1][1]["failed"] == len(fat_products.rejected)
    assert all(name in ("progress", "completed") for name, _ in seen)
    record = wait_until_final(pg_url, import_id, workers)
    check_record(record, fat_products)
    check_table(pg_url, table, fat_products)
    check_rejects(pg_url, import_id, fat_products)
    for server in (first, second):
        served = httpx.get(f"{server.url}/imports/{import_id}").json()
        assert served["status"] == "completed"
        assert served["rows"] == fat_products.records
        assert served["source"] == "fat.csv"
    assert list(staging.iterdir()) == [], "the staged object is deleted once imported"


def test_an_upload_the_broker_cannot_take_fails_with_its_reason(
    tmp_path: Path, pg_url: str, staging: Path
) -> None:
    """With the broker away, the staged upload is answered 503 with the reason, its record ends
    failed (not queued forever) and its staged object is deleted."""
    csv = tmp_path / "small.csv"
    csv.write_text("sku,name,price\nA-1,one,1.50\nA-2,two,2.50\n", encoding="utf-8")
    away = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens on port 1
    with serve(tmp_path, "--staging", file_url(staging), "--broker", away, db_url=pg_url) as one:
        status, _, answer = upload(
            f"{one.url}/imports?table={new_table()}", csv, "X-Import-Id: no-broker"
        )
        assert status == 503, answer
        assert "could not" in answer["error"]
        record = httpx.get(f"{one.url}/imports/no-broker").json()
    assert record["status"] == "failed", record
    assert record["error"], record
    assert list(staging.iterdir()) == []


def test_a_bad_staging_url_stops_the_server_at_start(tmp_path: Path) -> None:
    """A typo in --staging is a one-line error at start-up, not a 500 at the first upload."""
    done = subprocess.run(
        [*antioom_command(), "serve", "--staging", "ftp://nowhere/x", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "staging" in done.stderr.lower(), done.stderr


def test_the_dashboard_follows_a_queued_upload(
    browser: Any, tmp_path: Path, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """In a real browser, on a staging server: the upload says it is queued, and the import's
    row follows the worker's progress (read from the record, not this server's live feed) to
    ``completed`` with the worker's counts."""
    data = write_products(tmp_path / "products.csv", 3000, reject_every=1000)
    workers = workers_on(AMQP_BROKER)
    workers.start(1)
    options = ("--staging", file_url(staging), "--broker", AMQP_BROKER)
    with serve(tmp_path, *options, db_url=pg_url) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(server.url + "/")
            page.wait_for_selector('#feed-status[data-state="ok"]', timeout=10_000)
            page.set_input_files("#file-input", str(data.path))
            page.click("#upload-button")
            page.wait_for_selector("#upload-status[data-import-id]", timeout=10_000)
            import_id = page.locator("#upload-status").get_attribute("data-import-id")
            page.wait_for_function(
                "() => document.querySelector('#upload-status').textContent.includes('queued')",
                timeout=20_000,
            )
            row = page.locator(f'tr[data-testid="import-row"][data-import-id="{import_id}"]')
            page.wait_for_selector(
                f'tr[data-import-id="{import_id}"][data-status="completed"]', timeout=60_000
            )
            shown = row.locator('[data-testid="import-processed"]').inner_text()
            assert int(re.sub(r"\D", "", shown)) == data.valid
            failed = row.locator('[data-testid="import-failed"]').get_attribute("data-value")
            assert failed == str(len(data.rejected))
        finally:
            page.close()


def test_a_queued_upload_cancelled_before_it_runs_is_never_imported(
    tmp_path: Path, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """DELETE of a queued import (no worker has taken it yet) ends it ``aborted``; the worker
    that later takes its job drops it and its staged object, and creates no table."""
    data = write_products(tmp_path / "small.csv", 2000, reject_every=1000)
    table = new_table()
    options = ("--staging", file_url(staging), "--broker", AMQP_BROKER)
    workers = workers_on(AMQP_BROKER)  # the queue is purged; no worker runs yet
    with serve(tmp_path, *options, db_url=pg_url) as server:
        status, _, queued = upload(
            f"{server.url}/imports?table={table}", data.path, "X-Import-Id: cancel-queued"
        )
        assert (status, queued["status"]) == (202, "queued"), queued
        cancelled = httpx.delete(f"{server.url}/imports/cancel-queued")
        assert cancelled.status_code == 202, cancelled.text
        assert httpx.delete(f"{server.url}/imports/cancel-queued").status_code == 409
        workers.start(1)
        assert staged_objects(staging, timeout=30) == [], "the worker drops the staged object"
        record = httpx.get(f"{server.url}/imports/cancel-queued").json()
    assert record["status"] == "aborted", record
    assert "cancelled" in record["error"]
    assert not fetch(pg_url, "SELECT 1 FROM pg_tables WHERE tablename = %s", (table,))


def test_a_running_split_import_cancelled_stops_its_parts_and_keeps_its_counts_true(
    tmp_path: Path, mid_products: Products, pg_url: str, staging: Path, workers_on: Any
) -> None:
    """DELETE while the parts run: each part stops at its next batch, the record ends
    ``aborted`` (never ``completed`` or ``failed`` after it) and its counts are the rows the
    table holds; the staged object is deleted."""
    workers = workers_on(AMQP_BROKER)
    workers.start(1, concurrency=2)
    wait_for_consumers(AMQP_BROKER, 1, workers)
    table = new_table()
    options = ("--staging", file_url(staging), "--broker", AMQP_BROKER)
    with serve(tmp_path, *options, db_url=pg_url) as server:
        status, _, queued = upload(
            f"{server.url}/imports?table={table}", mid_products.path, "X-Import-Id: cancel-run"
        )
        assert status == 202, queued
        wait_for_batches(pg_url, "cancel-run", 4, workers)
        cancelled = httpx.delete(f"{server.url}/imports/cancel-run")
        assert cancelled.status_code == 202, cancelled.text
        assert staged_objects(staging, timeout=60) == [], "every part stopped and cleaned up"
        time.sleep(PROGRESS_S * 2)  # a part's last save would be late by now
        record = httpx.get(f"{server.url}/imports/cancel-run").json()
    assert record["status"] == "aborted", record
    [(rows,)] = fetch(pg_url, f"SELECT count(*) FROM {table}")
    assert 0 < rows < mid_products.valid
    assert record["processed"] == rows, (record, rows)


def test_a_big_input_is_cut_in_more_parts_than_asked(
    mid_products: Products, tmp_path: Path, staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts are at most ``MAX_PART_BYTES`` (patched small here: 17 MiB for a 52 MiB file),
    whatever ``--parts`` asked for, so that a part stays within the broker's delivery timeout.
    The jobs run in this process with a list for a queue (no broker needed to plan)."""
    from antioom.api import queue_csv
    from antioom.workers import jobs

    monkeypatch.setattr(jobs, "MAX_PART_BYTES", 17 << 20)
    queued: list[tuple[str, dict[str, Any]]] = []
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    queue_csv(
        mid_products.path,
        db,
        staging=file_url(staging),
        parts=2,
        table="t",
        enqueue=lambda kind, arguments: queued.append((kind, arguments)),
    )
    [(kind, arguments)] = queued
    assert kind == "plan"
    jobs.run_plan(jobs.Job.from_dict(arguments["job"]), lambda k, a: queued.append((k, a)))
    parts = [arguments["part"] for kind, arguments in queued[1:]]
    assert [kind for kind, _ in queued[1:]] == ["part"] * len(parts)
    assert len(parts) == 3, "52 MiB in parts of at most 17 MiB (and at least 16 MiB)"
    assert sum(part["records"] for part in parts) == mid_products.records
