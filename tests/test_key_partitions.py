"""``antioom import --workers N`` of an upsert or a keyed insert: parsed once, written by N
connections with the keys partitioned among them, into a real PostgreSQL.

Each key's rows go to one writer in input order, so the table must be exactly what one writer
makes (the last row of a key wins an upsert, the first lands in a keyed insert), every record
must be counted once, and a killed import must resume to the same table. The inputs are
worker_helpers' products files with repeated keys (record i has key SKU-(i % keys)) and some
prices ``n/a`` (rejected).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from conftest import antioom_command, clean_env, fetch
from test_parallel import antioom
from test_workers import new_table
from worker_helpers import Products, cents_of, name_of, write_products

from antioom.engine.batching import Batcher
from antioom.engine.partition import Spans, key_partitions, row_records, split
from antioom.engine.rejects import Reject
from antioom.engine.validate import Validated

# Small batches over a file with few keys: every key repeats within and across batches.
BATCH = ["--batch-size", "500"]


def wait_for_batches(
    process: subprocess.Popen[str] | subprocess.Popen[bytes], url: str, count: int
) -> None:
    """Until the ledger holds ``count`` batches (the import still running)."""
    deadline = time.monotonic() + 120
    batches = 0
    while batches < count and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
        try:
            [(batches,)] = fetch(url, "SELECT count(*) FROM antioom_batches")
        except Exception:  # no ledger yet
            batches = 0
    assert process.poll() is None, "the import ended before it could be stopped"


def table_rows(url: str, table: str) -> dict[str, tuple[str, int]]:
    rows = fetch(url, f"SELECT sku, name, round(price * 100)::bigint FROM {table}")
    return {sku.rstrip(): (name, cents) for sku, name, cents in rows}


def first_rows(data: Products) -> dict[str, tuple[str, int]]:
    """A keyed insert's table: the first valid row of each key."""
    table: dict[str, tuple[str, int]] = {}
    for record in range(1, data.records + 1):
        if record not in data.rejected:
            table.setdefault(data.sku_of(record), (name_of(record), cents_of(record)))
    return table


@pytest.fixture(scope="module")
def upserts(tmp_path_factory: pytest.TempPathFactory) -> Products:
    folder = tmp_path_factory.mktemp("partitions")
    return write_products(folder / "upserts.csv", 40_000, reject_every=997, clean=2_000, keys=5_000)


def test_two_writers_upsert_exactly_what_one_writer_upserts(upserts: Products, pg_url: str):
    table = new_table()
    command = ["import", upserts.path, "--db", pg_url, "--dataset", "products"]
    done = antioom(*command, "--table", table, "--workers", "2", *BATCH, "--json")
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed", summary
    assert "written by 2 connections side by side, keys partitioned" in summary["notes"]
    assert summary["rows"] == upserts.records
    assert summary["processed"] == upserts.valid
    assert summary["failed"] == len(upserts.rejected)
    assert summary["rejects_by_reason"] == {"price: not a number": len(upserts.rejected)}
    shown = [reject["record"] for reject in summary["rejects"]]
    assert shown == sorted(upserts.rejected)[: len(shown)], "record numbers are file-wide"
    assert table_rows(pg_url, table) == upserts.expected()


def test_two_writers_keyed_insert_lands_first_occurrences_and_rejects_the_rest(
    upserts: Products, pg_url: str
) -> None:
    """Every later occurrence of a key is a "duplicate key" reject under its own record
    number, as with one writer."""
    table = new_table()
    command = ["import", upserts.path, "--db", pg_url, "--table", table, "--key", "sku"]
    command += ["--type", "price=float"]
    done = antioom(*command, "--workers", "2", *BATCH, "--json")
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed", summary
    expected = first_rows(upserts)
    assert table_rows(pg_url, table) == expected
    assert summary["processed"] == len(expected)
    assert summary["rows"] == upserts.records
    assert summary["rejects_by_reason"] == {
        "price: not a number": len(upserts.rejected),
        "duplicate key": upserts.valid - len(expected),
    }


def test_a_killed_import_resumes_writer_by_writer_exactly(
    upserts: Products, pg_url: str, tmp_path: Path
) -> None:
    """kill -9 while both writers run, then --resume: each partition goes on after its own
    last committed record, the counts come out exact, and the table is the one-writer table.
    Resuming with another --workers is refused (keys would change writers)."""
    table = new_table()
    base = ["import", str(upserts.path), "--db", pg_url, "--dataset", "products"]
    base += ["--table", table, *BATCH]
    command = [*antioom_command(), *base, "--workers", "2", "--quiet"]
    process = subprocess.Popen(command, env=clean_env(), start_new_session=True)
    wait_for_batches(process, pg_url, 20)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    [(committed,)] = fetch(pg_url, "SELECT count(*) FROM antioom_batches")
    assert 20 <= committed < upserts.records // 500

    other = antioom(*base, "--workers", "1", "--resume", "--quiet", check=False)
    assert other.returncode == 2, other.stderr
    assert "resumes only the same way" in other.stderr or "same parts" in other.stderr
    assert "Traceback" not in other.stderr

    done = antioom(*base, "--workers", "2", "--resume", "--json")
    summary: dict[str, Any] = json.loads(done.stdout)
    assert summary["status"] == "completed", summary
    assert summary["resumed_from"]["batches"] >= 20
    assert (summary["rows"], summary["processed"]) == (upserts.records, upserts.valid)
    assert summary["failed"] == len(upserts.rejected)
    assert table_rows(pg_url, table) == upserts.expected()


def test_ctrl_c_stops_both_writers_and_the_printed_command_resumes_exactly(
    upserts: Products, pg_url: str
) -> None:
    """Ctrl-C: each writer finishes the batch it is writing, the import ends ``interrupted``
    (exit 130) with the command that resumes it, and that command completes the table."""
    table = new_table()
    command = [*antioom_command(), "import", str(upserts.path), "--db", pg_url]
    command += ["--dataset", "products", "--table", table, "--workers", "2", *BATCH]
    process = subprocess.Popen(
        command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_batches(process, pg_url, 10)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    [(status,)] = fetch(pg_url, "SELECT status FROM antioom_imports")
    assert status == "interrupted"
    hint = next(line for line in stderr.splitlines() if line.startswith("resume with: "))
    resume = shlex.split(hint.removeprefix("resume with: "))
    assert "--workers" in resume
    done = antioom(*resume[1:], "--json")
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed", summary
    assert (summary["rows"], summary["processed"]) == (upserts.records, upserts.valid)
    assert table_rows(pg_url, table) == upserts.expected()


@pytest.mark.parametrize(
    ("columns", "note"),
    [
        # Two rows of different keys could collide there, and which one wins would depend on
        # timing: one writer, and a note saying why.
        ("sku text PRIMARY KEY, name text UNIQUE", "unique index beyond the key"),
        ("sku text COLLATE {collation} PRIMARY KEY, name text", "not text or integers"),
        ("sku text PRIMARY KEY, name text, up text REFERENCES {table}", "foreign key to itself"),
        # Blank-padded keys ('a' and 'a ' are one key) are partitioned without trailing spaces.
        ("sku char(12) PRIMARY KEY, name text", "written by 2 connections"),
    ],
)
def test_where_two_keys_could_collide_one_connection_writes(
    tmp_path: Path, pg_url: str, columns: str, note: str
) -> None:
    data = write_products(tmp_path / "small.csv", 3_000, reject_every=1_000, clean=500)
    table = new_table()
    collation = f"{table}_ci"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE COLLATION {collation} (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false)"
        )
        shape = columns.format(collation=collation, table=table)
        conn.execute(f"CREATE TABLE {table} ({shape}, price float8, updated_at timestamptz)")
    done = antioom(
        "import", data.path, "--db", pg_url, "--dataset", "products", "--table", table,
        "--workers", "2", "--json",
    )  # fmt: skip
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed", summary
    assert any(note in line for line in summary["notes"]), summary["notes"]
    assert table_rows(pg_url, table) == data.expected()


def test_text_keys_into_an_integer_column_take_one_writer(tmp_path: Path, pg_url: str) -> None:
    """'007' and '7' differ as text but would be one key in a bigint column, so text keys
    into integers take one writer (a file where they collide fails either way: the staging
    path cannot compare text with bigint)."""
    table = new_table()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (sku bigint PRIMARY KEY, name text)")
    path = tmp_path / "zeros.csv"
    path.write_text("sku,name\n007,seven\n08,eight\n9,nine\n")
    command = ["import", path, "--db", pg_url, "--table", table, "--key", "sku"]
    done = antioom(*command, "--type", "sku=string", "--workers", "2", "--json")
    summary = json.loads(done.stdout)
    assert any("not text or integers" in note for note in summary["notes"]), summary["notes"]
    rows = fetch(pg_url, f"SELECT sku, name FROM {table} ORDER BY sku")
    assert rows == [(7, "seven"), (8, "eight"), (9, "nine")]


def test_drop_and_two_writers_make_the_table_anew_then_partition(
    upserts: Products, pg_url: str
) -> None:
    """--drop: the table is made anew before the writers are chosen (its old shape, here one
    with another unique index, does not count)."""
    table = new_table()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (sku text PRIMARY KEY, name text UNIQUE)")
    command = ["import", upserts.path, "--db", pg_url, "--dataset", "products"]
    done = antioom(*command, "--table", table, "--drop", "--workers", "2", *BATCH, "--json")
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed", summary
    assert "written by 2 connections side by side, keys partitioned" in summary["notes"]
    assert table_rows(pg_url, table) == upserts.expected()


# --------------------------------------------------------------------------- the parts


def test_a_key_has_one_partition_whatever_its_batch() -> None:
    """The partition is a function of the key alone: slicing, chunking and the other columns
    do not move it, and equal keys of different rows agree."""
    skus = [f"SKU-{i % 700}" for i in range(3_000)]
    table = pa.table({"sku": skus, "n": list(range(3_000))})
    whole = key_partitions(table, ["sku"], 3).to_pylist()
    chunked = pa.Table.from_batches(table.slice(1_000, 1_000).to_batches(max_chunksize=77))
    assert key_partitions(chunked, ["sku"], 3).to_pylist() == whole[1_000:2_000]
    by_key: dict[str, set[int]] = {}
    for sku, owner in zip(skus, whole, strict=True):
        by_key.setdefault(sku, set()).add(owner)
    assert all(len(owners) == 1 for owners in by_key.values())
    assert set(whole) == {0, 1, 2}
    numbers = pa.table({"id": pa.array([-5, 7, 2**62, -5], pa.int64())})
    first, *_, last = key_partitions(numbers, ["id"], 4).to_pylist()
    assert first == last


def test_the_partitions_spans_add_up_to_the_records_read() -> None:
    """Three blocks (records 10-33): rejects among rows, a block whose rows all have one key
    (so one partition gets no rows from it), a block of rejects only. Each partition's batches
    account for its own rows and rejects only, so together the ledger spans, plus the rejects
    after a partition's last batch (which a resume reads again), count every record once."""

    def block(first: int, keys: list[str], rejected: list[int]) -> Validated:
        rejects = [Reject(record=r, column="price", reason="bad") for r in rejected]
        return Validated(pa.table({"sku": pa.array(keys, pa.string())}), first, rejected, rejects)

    blocks = [
        block(10, [f"k{i}" for i in range(8)], [13, 16]),
        block(20, ["same"] * 9, [25]),
        block(30, [], [30, 31, 32, 33]),
    ]
    assert row_records(blocks[0]).to_pylist() == [10, 11, 12, 14, 15, 17, 18, 19]
    spanned = tails = 0
    for index in range(2):
        spans = Spans(9)
        batcher = Batcher("id", batch_size=3, batch_bytes=1 << 20, first_record=10)
        rejects: list[int] = []
        for whole in blocks:
            part = split(whole, ["sku"], 2, row_records(whole))[index]
            assert all(reject.record % 2 == index for reject in part.rejects)
            rejects += [reject.record for reject in part.rejects]
            spans.block(part)
            for batch in batcher.add(part):
                spans.account(batch)
                spanned += batch.end_record - batch.start_record + 1
        for batch in batcher.finish():
            spans.account(batch)
            spanned += batch.end_record - batch.start_record + 1
        tails += sum(1 for record in rejects if record > spans.end_record)
    assert spanned + tails == 24
