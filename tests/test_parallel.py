"""``antioom import big.csv --workers N``: one local file imported in parts side by side, each
part a pipeline with a connection of its own, into a real PostgreSQL.

The inputs are worker_helpers' products files (every row a function of its record number,
some names quoted with commas, doubled quotes or line breaks; some prices ``n/a``, rejected),
so the table, the counts and the rejects are checked against what the generator knows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import antioom_command, clean_env, fetch
from test_workers import check_big_table, new_table
from worker_helpers import Products, write_products

RECORDS = 1_600_000  # ~55 MB: three parts of at least 16 MiB


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> Products:
    folder = tmp_path_factory.mktemp("parallel")
    return write_products(folder / "products.csv", RECORDS, reject_every=3001, clean=100_000)


def antioom(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*antioom_command(), *map(str, args)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_three_workers_import_exactly_what_one_pass_imports(
    products: Products, pg_url: str
) -> None:
    """The table holds every valid row once, the summary counts every record once (rejects
    under their file-wide record numbers), and says it ran in three parts."""
    table = new_table()
    done = antioom(
        "import", products.path, "--db", pg_url, "--table", table, "--workers", "3", "--json"
    )
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed", summary
    assert summary["rows"] == products.records
    assert summary["processed"] == products.valid
    assert summary["failed"] == len(products.rejected)
    assert "imported in 3 parts side by side" in summary["notes"]
    assert summary["rejects_by_reason"] == {"price: not a number": len(products.rejected)}
    shown = [reject["record"] for reject in summary["rejects"]]
    assert shown == sorted(products.rejected)[: len(shown)], "the first rejects, file-wide"
    check_big_table(pg_url, table, products)


def test_a_parallel_import_killed_resumes_part_by_part_exactly(
    products: Products, pg_url: str, tmp_path: Path
) -> None:
    """kill -9 while the parts run, then the same command with --resume: every part goes on
    after its own committed batches (a finished one is not run again) and the table ends
    exact; resuming with another --workers is refused, as it would cut other parts."""
    table = new_table()
    command = [*antioom_command(), "import", str(products.path), "--db", pg_url]
    command += ["--table", table, "--workers", "3", "--quiet"]
    process = subprocess.Popen(command, env=clean_env(), start_new_session=True)
    deadline = time.monotonic() + 120
    batches = 0
    while batches < 12 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
        try:
            [(batches,)] = fetch(pg_url, "SELECT count(*) FROM antioom_batches")
        except Exception:  # no ledger yet
            batches = 0
    assert process.poll() is None, "the import ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    [(rows,)] = fetch(pg_url, f"SELECT count(*) FROM {table}")
    assert 0 < rows < products.valid

    other = antioom(*command[1:-3], "--workers", "2", "--resume", "--quiet", check=False)
    assert other.returncode == 2, other.stderr
    assert "same parts" in other.stderr and "Traceback" not in other.stderr

    done = antioom(*command[1:], "--resume", "--json")
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed", summary
    assert summary["resumed_from"]["rows"] > 0
    assert (summary["rows"], summary["processed"]) == (products.records, products.valid)
    check_big_table(pg_url, table, products)


def test_what_cannot_run_in_parts_runs_in_one_pass_and_says_why(
    tmp_path: Path, pg_url: str
) -> None:
    """SQLite (one writer), a limit, a small file: one pass, and a note saying why. (An
    upsert or keyed insert is written by key partitions instead: test_key_partitions.)"""
    data = write_products(tmp_path / "small.csv", 3000, reject_every=1000)
    sqlite = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cases: list[tuple[list[str], str]] = [
        (["--db", sqlite, "--table", "t"], "SQLite takes one writer"),
        (["--db", sqlite, "--dataset", "products"], "SQLite takes one writer"),
        (["--db", pg_url, "--table", new_table(), "--limit", "3000"], "need one pass"),
        (["--db", pg_url, "--table", new_table()], "smaller than 2 parts"),
    ]
    for args, why in cases:
        summary: dict[str, Any] = json.loads(
            antioom("import", data.path, *args, "--workers", "2", "--json").stdout
        )
        assert summary["status"] == "completed", summary
        assert summary["rows"] == data.records
        assert any(why in note for note in summary["notes"]), (why, summary["notes"])


def test_a_rejects_file_takes_one_writer(tmp_path: Path, pg_url: str) -> None:
    data = write_products(tmp_path / "small.csv", 10, reject_every=1000)
    done = antioom(
        "import",
        data.path,
        "--db",
        pg_url,
        "--table",
        new_table(),
        "--workers",
        "2",
        "--rejects",
        tmp_path / "rejects.csv",
        check=False,
    )
    assert done.returncode == 2
    assert "--workers 1" in done.stderr and "Traceback" not in done.stderr


def test_a_part_closed_before_must_end_where_the_new_part_ends(
    products: Products, pg_url: str
) -> None:
    """Three parts, of which only the first ran and closed; resumed as two parts, whose first
    would take that closed part for itself and skip the records after it: refused before any
    part runs, and nothing is written."""
    from antioom.api import import_csv
    from antioom.engine.pipeline import Options, Target, resolve_dataset, run_import
    from antioom.engine.records import Dialect
    from antioom.engine.source import CountingReader
    from antioom.errors import ImportConflict
    from antioom.history import open_store
    from antioom.parallel import FileRange, plan_file
    from antioom.sinks import open_sink

    table, import_id = new_table(), f"closed-{new_table()}"
    found = plan_file(str(products.path), Options(dialect=Dialect()), 3)
    first = found.parts[0]
    dataset = resolve_dataset(
        FileRange(str(products.path), first.start, first.end), Target(table=table), found.dialect
    )
    with open_sink(pg_url) as sink:
        sink.prepare(dataset)
        run_import(
            CountingReader(FileRange(str(products.path), first.start, first.end)),
            sink,
            Target(dataset=dataset),
            Options(import_id=import_id, dialect=found.dialect, part=first),
        )
    store = open_store(pg_url)
    try:
        store.close_part(
            import_id,
            first.seqs.stop - 1,
            first.first_record + first.records,
            first.first_record + first.records - 1,
        )
    finally:
        store.close()
    [(before,)] = fetch(pg_url, f"SELECT count(*) FROM {table}")

    with pytest.raises(ImportConflict, match="same parts"):
        import_csv(products.path, pg_url, table=table, workers=2, import_id=import_id)
    [(after,)] = fetch(pg_url, f"SELECT count(*) FROM {table}")
    assert after == before


def test_a_file_that_fails_before_its_parts_run_leaves_a_failed_record(
    tmp_path: Path, pg_url: str
) -> None:
    """An input refused while it is planned ends its record ``failed`` (exit 3), not
    ``running``."""
    path = tmp_path / "noise.csv"
    path.write_bytes(bytes(range(256)) * 400)
    done = antioom(
        "import",
        path,
        "--db",
        pg_url,
        "--table",
        new_table(),
        "--workers",
        "2",
        "--import-id",
        "noise",
        check=False,
    )
    assert done.returncode == 3, done.stderr
    [(status,)] = fetch(pg_url, "SELECT status FROM antioom_imports WHERE id = 'noise'")
    assert status == "failed"
