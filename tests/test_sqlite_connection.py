"""SQLite through ADBC: what the sink and the import records rely on from one connection.

Every SQLite access of antioom runs on ADBC's copy of SQLite (two copies in one process do
not see each other's locks), so these are the sqlite3-module habits the rest of the code
expects, checked on real database files.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from antioom import import_csv
from antioom.engine.datasets import Column, Dataset
from antioom.errors import DatabaseUnavailable, TargetError
from antioom.sinks.sqlite import SQLiteSink
from antioom.sinks.sqlite_connection import Error, connect


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "t.db")
    with connect(path) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    return path


def test_a_table_is_bound_row_by_row_and_counted(db: str) -> None:
    rows = pa.table({"k": ["a", "b", None], "v": pa.array([1, None, 3], pa.int64())})
    with connect(db) as conn:
        conn.execute("CREATE TABLE n (k TEXT, v INTEGER)")
        assert conn.executemany("INSERT INTO n VALUES (?, ?)", rows) == 3
        found = conn.execute("SELECT k, v, typeof(v) FROM n ORDER BY rowid").fetchall()
    assert found == [("a", 1, "integer"), ("b", None, "null"), (None, 3, "integer")]


def test_a_failed_statement_leaves_no_parameters_to_the_next(db: str) -> None:
    with connect(db) as conn:
        conn.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
        with pytest.raises(Error, match="UNIQUE constraint failed"):
            conn.execute("INSERT INTO t VALUES (?, ?)", ("a", 2))
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(1,)]


def test_rowcount_counts_the_rows_a_change_touched(db: str) -> None:
    with connect(db) as conn:
        assert conn.executemany("INSERT INTO t VALUES (?, ?)", [("a", 1), ("b", 2)]) == 2
        assert conn.execute("UPDATE t SET v = v + 1").rowcount == 2
        assert conn.execute("INSERT OR IGNORE INTO t VALUES ('a', 9)").rowcount == 0
        assert conn.execute("SELECT v FROM t ORDER BY k").rowcount == -1


def test_the_store_mode_holds_a_change_until_commit(db: str) -> None:
    """implicit_begin: a change opens a transaction (as Python's sqlite3 does), which others
    do not see until commit; rollback undoes it."""
    with connect(db, implicit_begin=True) as store, connect(db) as other:
        store.execute("INSERT INTO t VALUES ('kept', 1)")
        assert store.in_transaction
        assert other.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
        store.commit()
        store.execute("INSERT INTO t VALUES ('undone', 2)")
        store.rollback()
        assert other.execute("SELECT k FROM t").fetchall() == [("kept",)]


def test_rollback_ends_a_transaction_it_was_not_told_of(db: str) -> None:
    """A Ctrl-C can land after a BEGIN and before the connection notes it: rollback still
    releases the write lock, so the import record can be saved."""
    with connect(db) as conn, connect(db) as other:
        conn.execute("BEGIN IMMEDIATE")
        conn.in_transaction = False  # as if interrupted before it was noted
        conn.execute("INSERT INTO t VALUES ('lost', 1)")
        conn.rollback()
        other.execute("PRAGMA busy_timeout = 100")
        other.execute("INSERT INTO t VALUES ('saved', 2)")  # raises if the lock were held
        assert other.execute("SELECT k FROM t").fetchall() == [("saved",)]


def test_an_unopenable_file_is_database_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="no such directory"):
        connect(str(tmp_path / "missing" / "t.db"))
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(DatabaseUnavailable, match="cannot open SQLite database"):
        connect(str(tmp_path / "dir.db"))


def test_an_import_and_the_server_never_load_pythons_sqlite3(tmp_path: Path) -> None:
    """Python's sqlite3 would be a second SQLite in the process: none of antioom's code paths
    (CLI, server, import records, the sink) may load it."""
    csv = tmp_path / "p.csv"
    csv.write_text("sku,price\nA,1.50\nB,2.00\n")
    script = textwrap.dedent(
        f"""
        import sys
        import antioom.cli, antioom.server.app
        from antioom import import_csv
        summary = import_csv({str(csv)!r}, "sqlite:///{tmp_path / "p.db"}", table="p")
        assert summary.processed == 2, summary
        loaded = sorted(m for m in sys.modules if "sqlite3" in m)
        print(loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_closing_twice_is_harmless(db: str) -> None:
    conn = connect(db)
    conn.close()
    conn.close()


def test_a_column_null_in_its_first_thousands_of_rows_reads_back(db: str) -> None:
    """ADBC infers a result's column types from its first rows."""
    values = [None] * 5_000 + ["late"]
    with connect(db) as conn:
        conn.execute("CREATE TABLE sparse (v)")
        conn.executemany("INSERT INTO sparse VALUES (?)", pa.table({"v": values}))
        found = conn.execute("SELECT v FROM sparse ORDER BY rowid").fetchall()
    assert [row[0] for row in found] == values


def test_rows_sqlite_refuses_are_rejected_with_its_reason(tmp_path: Path) -> None:
    """A text key for an INTEGER PRIMARY KEY and a trigger's RAISE reject their row; the
    rest of the batch lands."""
    path = tmp_path / "t.db"
    with connect(str(path)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute(
            "CREATE TRIGGER no_bad BEFORE INSERT ON t WHEN NEW.v = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'v must not be bad'); END"
        )
    csv = tmp_path / "t.csv"
    csv.write_text("id,v\n1,a\nA,b\n2,bad\n3,c\n")
    summary = import_csv(csv, f"sqlite:///{path}", table="t")
    assert (summary.status, summary.processed, summary.failed) == ("completed", 2, 2)
    reasons = sorted(reject.reason for reject in summary.rejects)
    assert reasons == ["datatype mismatch", "v must not be bad"]
    with connect(str(path)) as conn:
        assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, "a"), (3, "c")]


@pytest.mark.parametrize("table", ["stats", "disk_stats", "busy_locked", "readonly_database"])
def test_a_refused_table_definition_is_a_target_error_whatever_its_name(
    tmp_path: Path, table: str
) -> None:
    """Only SQLite's message decides, not the statement ADBC quotes with it."""
    dataset = Dataset(name=table, table=table, columns=(Column(name="Order"), Column(name="order")))
    with (
        SQLiteSink(f"sqlite:///{tmp_path / 't.db'}") as sink,
        pytest.raises(TargetError, match="duplicate column name"),
    ):
        sink.prepare(dataset)
