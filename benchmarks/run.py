"""Side-by-side benchmark: antioom against the stock bulk loaders, written to RESULTS.md.

    .venv/bin/python benchmarks/run.py [--large] [--sizes 10MB,100MB] [--repeat N]
                                       [--pg-url URL] [--skip-pandas] [--skip-postgres]
                                       [--skip-antioom] [--output PATH]

(``--generate-worker`` and ``--pandas-worker`` are internal: this script re-runs itself with them.)

For every file size it generates a products CSV with antioom's own generator (cached in
benchmarks/data/), then runs each case as alternating pairs (antioom, baseline, antioom, ...),
each run a fresh subprocess starting from an empty target table, and reports medians.

Cases: SQLite insert (sqlite3 ``.import``), SQLite upsert by sku (``.import`` into a sku-keyed
table), PostgreSQL insert (psql ``\\copy``), PostgreSQL upsert (psql ``\\copy`` into a staging
table, then ``INSERT ... ON CONFLICT``), and pandas ``read_csv`` + ``to_sql`` into both.

Measuring peak RSS: ``os.wait4`` returns the child's ``ru_maxrss``.  Linux carries the high-water
mark of the address space a process had *before* ``execve`` into that figure, and a child starts
out sharing (vfork) or copying (fork) this script's memory, so no child can report less than this
script's own peak.  The script therefore stays small (no pyarrow or pandas in this process: data
generation and pandas run in worker subprocesses) and figures at that floor are shown as "<= N".

The script is deliberately stdlib-only in the parent process and has no dependency on antioom's
internals: the antioom side is just ``.venv/bin/antioom import ... --json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
DATASETS_TOML = BENCH_DIR / "datasets.toml"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
SQLITE_DB = DATA_DIR / "bench.db"
DEFAULT_SIZES = ("10MB", "100MB")
LARGE_SIZE = "1GB"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
SEED = 0
PANDAS_CHUNKSIZE = 100_000
CONCURRENT_SIZE = "250MB"
CONCURRENT_UPLOADS = 4
ANALYSIS_HEADING = "## Analysis"
ANALYSIS_PLACEHOLDER = (
    "_To be filled in by hand: what the numbers mean, which targets were missed and why._"
)
UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}

SQLITE_PLAIN_DDL = "CREATE TABLE products_plain (sku TEXT, name TEXT, price REAL)"
SQLITE_PRODUCTS_DDL = (
    "CREATE TABLE products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL, "
    "updated_at TEXT)"
)
# .import of a 3-column file into the 4-column table above prints one "expected 4 columns but
# found 3" warning per row (gigabytes of stderr, and time spent writing it), so the baseline
# loads a sku-keyed table without updated_at: the same key and index, one less (NULL) column.
SQLITE_KEYED_DDL = (
    "CREATE TABLE products_keyed (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL)"
)
# The shape antioom's MySQL sink creates for products_plain (strings that are not keys: LONGTEXT).
MYSQL_PLAIN_DDL = (
    "CREATE TABLE products_plain (sku LONGTEXT NOT NULL, name LONGTEXT NOT NULL, "
    "price DOUBLE NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
)
PG_PLAIN_DDL = "CREATE TABLE products_plain (sku text, name text, price double precision)"
PG_KEYED_DDL = (
    "CREATE TABLE products_keyed (sku text PRIMARY KEY, name text NOT NULL, "
    "price double precision NOT NULL)"
)
PG_PRODUCTS_DDL = (
    "CREATE TABLE products (sku text PRIMARY KEY, name text NOT NULL, "
    "price double precision NOT NULL, updated_at timestamptz)"
)


class BenchmarkError(RuntimeError):
    """A run failed or produced a wrong result: the benchmark stops rather than report it."""


# --------------------------------------------------------------------------------------------
# Data model


@dataclass(frozen=True)
class DataFile:
    """A generated products file of one nominal size."""

    label: str  # "10MB"
    size_bytes: int  # the bound it was generated with
    path: Path
    rows: int
    bytes: int


@dataclass(frozen=True)
class Run:
    """One timed subprocess: wall time, peak RSS, and antioom's --json summary if any."""

    wall_s: float
    peak_rss_mb: float  # MiB, from ru_maxrss
    rss_floor_mb: float  # this script's own peak when the child started (see module doc)
    cpu_s: float = 0.0  # the child's own user + system CPU
    other_cpu_s: float = 0.0  # the rest of the machine's busy CPU meanwhile: the database
    summary: dict[str, Any] | None = None

    @property
    def rss_at_floor(self) -> bool:
        """True if the child's own peak is hidden under the inherited floor."""
        return self.peak_rss_mb <= self.rss_floor_mb


@dataclass(frozen=True)
class Contender:
    """One side of a case: how to reset the target, the command to time, how to check it."""

    tool: str
    command: list[str]
    reset: Callable[[], None]
    count_rows: Callable[[], int]
    antioom: bool = False


@dataclass(frozen=True)
class Target:
    """A ratio target for antioom's median wall time over the baseline's."""

    max_ratio: float
    label: str


@dataclass(frozen=True)
class Case:
    """A head-to-head: antioom against one baseline on the same file and table shape."""

    key: str
    title: str
    antioom: Contender
    baseline: Contender
    target: Target


@dataclass
class Measurement:
    """All runs of one contender in one case at one size."""

    case: Case
    data: DataFile
    contender: Contender
    runs: list[Run] = field(default_factory=list)

    @property
    def median_wall_s(self) -> float:
        return statistics.median(run.wall_s for run in self.runs)

    @property
    def rows_per_s(self) -> float:
        return self.data.rows / self.median_wall_s

    @property
    def cpu_s(self) -> float:
        return statistics.median(run.cpu_s for run in self.runs)

    @property
    def other_cpu_s(self) -> float:
        return statistics.median(run.other_cpu_s for run in self.runs)

    @property
    def peak_rss_mb(self) -> float:
        """The highest peak over the runs (memory targets are about the worst case)."""
        return max(run.peak_rss_mb for run in self.runs)

    @property
    def rss_at_floor(self) -> bool:
        return all(run.rss_at_floor for run in self.runs)


@dataclass(frozen=True)
class Config:
    """Command-line options after defaults are applied."""

    sizes: list[str]
    repeat: int | None
    pg_url: str | None  # None: PostgreSQL cases skipped
    mysql_url: str | None  # None: MariaDB cases skipped
    pandas: bool
    antioom: bool
    http: bool
    output: Path
    argv: list[str]


# --------------------------------------------------------------------------------------------
# Running and measuring subprocesses


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MiB: the floor under every child's ru_maxrss."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(command: Sequence[str], *, what: str) -> tuple[Run, str]:
    """Run ``command``, timing it and taking its peak RSS from ``os.wait4``; return its stdout.

    Output goes to temporary files rather than pipes so the child can never block on a full pipe
    while this process sits in ``wait4`` (``Popen.communicate`` would reap the child itself and
    lose its rusage).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        floor = own_peak_rss_mb()
        busy_before = machine_busy_s()
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(command), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy = machine_busy_s() - busy_before
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout, stderr = read_tail(out), read_tail(err)
    if proc.returncode != 0:
        raise BenchmarkError(
            f"{what} failed (exit {proc.returncode}): {shlex.join(command)}\n"
            f"--- stderr (tail) ---\n{tail(stderr)}\n--- stdout (tail) ---\n{tail(stdout)}"
        )
    cpu = usage.ru_utime + usage.ru_stime
    run = Run(
        wall_s=wall,
        peak_rss_mb=usage.ru_maxrss / 1024,
        rss_floor_mb=floor,
        cpu_s=cpu,
        other_cpu_s=max(busy - cpu, 0.0),
    )
    return run, stdout


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``): the part a
    run's own process did not use went to the database server (this script only waits)."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def read_tail(handle: IO[bytes], limit: int = 1 << 20) -> str:
    """The last ``limit`` bytes of a child's output: enough for a JSON summary or an error,
    and never so much that reading it raises this process's peak RSS (the children's floor)."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    return handle.read().decode("utf-8", "replace")


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def check(command: Sequence[str], *, what: str, input_text: str | None = None) -> str:
    """Run an untimed helper command (setup, counting), failing loudly."""
    proc = subprocess.run(list(command), input=input_text, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchmarkError(
            f"{what} failed (exit {proc.returncode}): {shlex.join(command)}\n{tail(proc.stderr)}"
        )
    return proc.stdout


def run_contender(case: Case, contender: Contender, data: DataFile) -> Run:
    """Reset the target, time one run, then verify every row arrived."""
    contender.reset()
    what = f"{case.title} / {contender.tool} / {data.label}"
    run, stdout = measure(contender.command, what=what)
    if contender.antioom:
        summary = parse_summary(stdout, what=what)
        if summary.get("status") != "completed" or summary.get("processed") != data.rows:
            raise BenchmarkError(
                f"{what}: expected status 'completed' and processed == {data.rows}, got "
                f"{json.dumps({k: summary.get(k) for k in ('status', 'processed', 'failed')})}"
            )
        run = replace(run, summary=summary)
    count = contender.count_rows()
    if count != data.rows:
        raise BenchmarkError(f"{what}: table holds {count} rows, expected {data.rows}")
    return run


def parse_summary(stdout: str, *, what: str) -> dict[str, Any]:
    """antioom's --json summary: the whole stdout, or else its last line that is a JSON object."""
    candidates = [stdout, *reversed(stdout.strip().splitlines())]
    for text in candidates:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise BenchmarkError(f"{what}: no JSON summary on stdout:\n{tail(stdout)}")


def run_case(
    case: Case, data: DataFile, repeat: int, *, with_antioom: bool
) -> tuple[Measurement | None, Measurement]:
    """Alternate antioom and baseline runs (A B A B ...) so drift hits both sides alike."""
    ours = Measurement(case, data, case.antioom) if with_antioom else None
    theirs = Measurement(case, data, case.baseline)
    for i in range(repeat):
        for measurement in (ours, theirs):
            if measurement is None:
                continue
            run = run_contender(case, measurement.contender, data)
            measurement.runs.append(run)
            rss = f"<= {run.rss_floor_mb:.0f}" if run.rss_at_floor else f"{run.peak_rss_mb:.1f}"
            log(
                f"  {data.label:>6} {case.title:<28} {measurement.contender.tool:<26} "
                f"run {i + 1}/{repeat}: {run.wall_s:8.2f} s {rss:>8} MiB"
            )
    return ours, theirs


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Targets: SQLite (sqlite3 CLI) and PostgreSQL (psql)


def sqlite_url(db: Path) -> str:
    return f"sqlite:///{db}"


def sqlite_reset(db: Path, ddl: str) -> Callable[[], None]:
    """A fresh database file holding just the empty target table."""

    def reset() -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        check(["sqlite3", "-bail", str(db), ddl], what=f"create SQLite table in {db}")

    return reset


def sqlite_count(db: Path, table: str) -> Callable[[], int]:
    def count() -> int:
        out = check(["sqlite3", str(db), f"SELECT count(*) FROM {table}"], what="count rows")
        return int(out.strip())

    return count


def sqlite_import_command(db: Path, data: DataFile, table: str) -> list[str]:
    """The stock CLI bulk load: ``.mode csv`` + ``.import --skip 1`` (one transaction)."""
    quoted = '"' + str(data.path).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return ["sqlite3", "-bail", str(db), ".mode csv", f".import --skip 1 {quoted} {table}"]


def psql(pg_url: str, *args: str) -> list[str]:
    return ["psql", pg_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", *args]


def pg_reset(pg_url: str, table: str, ddl: str) -> Callable[[], None]:
    """Drop and recreate the table, then CHECKPOINT so no earlier run's dirty pages get
    flushed on this run's time."""

    def reset() -> None:
        sql = f"DROP TABLE IF EXISTS {table}; {ddl}; CHECKPOINT;"
        check(psql(pg_url, "-c", sql), what=f"recreate PostgreSQL table {table}")

    return reset


def pg_count(pg_url: str, table: str) -> Callable[[], int]:
    def count() -> int:
        out = check(psql(pg_url, "-tA", "-c", f"SELECT count(*) FROM {table}"), what="count rows")
        return int(out.strip())

    return count


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def pg_copy_command(pg_url: str, data: DataFile, table: str = "products_plain") -> list[str]:
    copy = (
        f"\\copy {table}(sku,name,price) FROM {sql_literal(str(data.path))} "
        "WITH (FORMAT csv, HEADER true)"
    )
    return psql(pg_url, "-c", copy)


def pg_staging_upsert_script(data: DataFile) -> Path:
    """The usual hand-written upsert: \\copy into a temp table, then INSERT ... ON CONFLICT."""
    script = DATA_DIR / f"pg-upsert-{data.label}.sql"
    script.write_text(
        "CREATE TEMP TABLE staging (sku text, name text, price double precision);\n"
        f"\\copy staging FROM {sql_literal(str(data.path))} WITH (FORMAT csv, HEADER true)\n"
        "INSERT INTO products (sku, name, price, updated_at)\n"
        "SELECT sku, name, price, now() FROM staging\n"
        "ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price = excluded.price,\n"
        "    updated_at = excluded.updated_at;\n"
    )
    return script


# --------------------------------------------------------------------------------------------
# Cases


def antioom_bin() -> Path:
    """The antioom under test: a production install (``make bench`` builds .venv-bench with
    antioom's runtime dependencies only), else the one beside the running interpreter.

    The dev venv carries numpy (a test dependency needs it), which pyarrow imports whenever it
    can, as it does pandas: RSS and start-up time that a production install does not have.
    """
    override = os.environ.get("ANTIOOM_BIN")
    if override:
        return Path(override)
    product = REPO / ".venv-bench" / "bin" / "antioom"
    return product if product.exists() else Path(sys.executable).parent / "antioom"


def antioom_command(data: DataFile, db_url: str, dataset: str) -> list[str]:
    command = [str(antioom_bin()), "import", str(data.path), "--db", db_url, "--dataset", dataset]
    if dataset != "products":  # products is built in; the others are declared in datasets.toml
        command += ["--datasets", str(DATASETS_TOML)]
    return [*command, "--json"]


def pandas_python() -> str:
    """pandas runs from its own venv (``make bench`` builds .venv-pandas), if there is one."""
    own = REPO / ".venv-pandas" / "bin" / "python"
    return str(own) if own.exists() else sys.executable


def pandas_command(data: DataFile, kind: str, target: str) -> list[str]:
    return [
        pandas_python(),
        str(Path(__file__).resolve()),
        "--pandas-worker",
        kind,
        str(data.path),
        target,
        "products_plain",
    ]


def antioom_contender(
    data: DataFile, db_url: str, dataset: str, reset: Callable[[], None], count: Callable[[], int]
) -> Contender:
    return Contender("antioom", antioom_command(data, db_url, dataset), reset, count, True)


def build_cases(data: DataFile, config: Config) -> list[Case]:
    """Every case for one data file, in the order they run."""
    db = SQLITE_DB
    plain_reset, plain_count = (
        sqlite_reset(db, SQLITE_PLAIN_DDL),
        sqlite_count(db, "products_plain"),
    )
    keyed_reset, keyed_count = sqlite_reset(db, SQLITE_PRODUCTS_DDL), sqlite_count(db, "products")
    baseline_keyed_reset = sqlite_reset(db, SQLITE_KEYED_DDL)
    baseline_keyed_count = sqlite_count(db, "products_keyed")
    sqlite_insert = antioom_contender(
        data, sqlite_url(db), "products_plain", plain_reset, plain_count
    )
    cases = [
        Case(
            "sqlite-insert",
            "SQLite insert",
            sqlite_insert,
            Contender(
                "sqlite3 .import",
                sqlite_import_command(db, data, "products_plain"),
                plain_reset,
                plain_count,
            ),
            Target(0.9, "<= 0.9x"),
        ),
        Case(
            "sqlite-upsert",
            "SQLite upsert by sku",
            antioom_contender(data, sqlite_url(db), "products", keyed_reset, keyed_count),
            Contender(
                "sqlite3 .import (sku key)",
                sqlite_import_command(db, data, "products_keyed"),
                baseline_keyed_reset,
                baseline_keyed_count,
            ),
            Target(1.0, "<= 1.0x"),
        ),
    ]
    if config.pg_url is not None:
        url = config.pg_url
        pg_plain_reset = pg_reset(url, "products_plain", PG_PLAIN_DDL)
        pg_plain_count = pg_count(url, "products_plain")
        pg_keyed_reset = pg_reset(url, "products", PG_PRODUCTS_DDL)
        pg_keyed_count = pg_count(url, "products")
        pg_keyed_insert_reset = pg_reset(url, "products_keyed", PG_KEYED_DDL)
        pg_kc = pg_count(url, "products_keyed")
        pg_insert = antioom_contender(data, url, "products_plain", pg_plain_reset, pg_plain_count)
        pg_keyed_insert = antioom_contender(
            data, url, "products_keyed", pg_keyed_insert_reset, pg_kc
        )
        pg_keyed_baseline = Contender(
            "psql \\copy (sku key)",
            pg_copy_command(url, data, "products_keyed"),
            pg_keyed_insert_reset,
            pg_kc,
        )
        pg_upsert = antioom_contender(data, url, "products", pg_keyed_reset, pg_keyed_count)
        pg_upsert_baseline = Contender(
            "psql \\copy + ON CONFLICT",
            psql(url, "-f", str(pg_staging_upsert_script(data))),
            pg_keyed_reset,
            pg_keyed_count,
        )
        cases += [
            Case(
                "pg-insert",
                "PostgreSQL insert",
                pg_insert,
                Contender(
                    "psql \\copy", pg_copy_command(url, data), pg_plain_reset, pg_plain_count
                ),
                Target(1.0, "<= 1.0x"),
            ),
            Case(
                "pg-insert-workers",
                "PostgreSQL insert, --workers 2",
                replace(pg_insert, command=[*pg_insert.command, "--workers", "2"]),
                Contender(
                    "psql \\copy", pg_copy_command(url, data), pg_plain_reset, pg_plain_count
                ),
                Target(1.0, "<= 1.0x"),
            ),
            Case(
                "pg-keyed-insert",
                "PostgreSQL insert, sku-keyed table",
                pg_keyed_insert,
                pg_keyed_baseline,
                Target(1.1, "<= 1.1x"),
            ),
            Case(
                "pg-keyed-insert-workers",
                "PostgreSQL insert, sku-keyed table, --workers 2",
                replace(pg_keyed_insert, command=[*pg_keyed_insert.command, "--workers", "2"]),
                pg_keyed_baseline,
                Target(1.1, "<= 1.1x"),
            ),
            Case(
                "pg-upsert",
                "PostgreSQL upsert by sku",
                pg_upsert,
                pg_upsert_baseline,
                Target(0.8, "<= 0.8x"),
            ),
            Case(
                "pg-upsert-workers",
                "PostgreSQL upsert by sku, --workers 2",
                replace(pg_upsert, command=[*pg_upsert.command, "--workers", "2"]),
                pg_upsert_baseline,
                Target(0.8, "<= 0.8x"),
            ),
        ]
    if config.mysql_url is not None:
        cases.append(mysql_case(data, config.mysql_url))
    if config.pandas:
        cases.append(
            Case(
                "pandas-sqlite",
                "SQLite insert vs pandas",
                sqlite_insert,
                Contender(
                    "pandas to_sql",
                    pandas_command(data, "sqlite", str(db)),
                    plain_reset,
                    plain_count,
                ),
                Target(0.2, ">= 5x faster"),
            )
        )
        if config.pg_url is not None:
            cases.append(
                Case(
                    "pandas-pg",
                    "PostgreSQL insert vs pandas",
                    pg_insert,
                    Contender(
                        "pandas to_sql",
                        pandas_command(data, "postgres", config.pg_url),
                        pg_plain_reset,
                        pg_plain_count,
                    ),
                    Target(0.2, ">= 5x faster"),
                )
            )
    return cases


# --------------------------------------------------------------------------------------------
# MariaDB (the `mariadb` client's LOAD DATA LOCAL INFILE)


def mariadb(mysql_url: str, sql: str) -> list[str]:
    """A `mariadb` client command for ``mysql://user[:pass]@host[:port]/db``."""
    parts = urllib.parse.urlsplit(mysql_url)
    command = ["mariadb", "--local-infile=1", "-h", parts.hostname or "127.0.0.1"]
    command += ["-P", str(parts.port or 3306), "-u", urllib.parse.unquote(parts.username or "root")]
    if parts.password:
        command.append(f"-p{urllib.parse.unquote(parts.password)}")
    return [*command, parts.path.lstrip("/"), "-N", "-e", sql]


def mysql_case(data: DataFile, mysql_url: str) -> Case:
    def reset() -> None:
        sql = f"DROP TABLE IF EXISTS products_plain; {MYSQL_PLAIN_DDL}"
        check(mariadb(mysql_url, sql), what="recreate MariaDB table products_plain")

    def count() -> int:
        out = check(mariadb(mysql_url, "SELECT COUNT(*) FROM products_plain"), what="count")
        return int(out.strip())

    load = (
        f"LOAD DATA LOCAL INFILE {sql_literal(str(data.path))} INTO TABLE products_plain "
        "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
        "LINES TERMINATED BY '\\n' IGNORE 1 LINES (sku, name, price)"
    )
    return Case(
        "mysql-insert",
        "MariaDB insert",
        antioom_contender(data, mysql_url, "products_plain", reset, count),
        Contender("mariadb LOAD DATA LOCAL", mariadb(mysql_url, load), reset, count),
        Target(1.0, "<= 1.0x"),
    )


# --------------------------------------------------------------------------------------------
# The HTTP service: curl uploads into `antioom serve`, with the server's RSS sampled


class ServerUnderTest:
    """An `antioom serve` subprocess on a free port, its RSS sampled every 50 ms."""

    def __init__(self, pg_url: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        env = {
            **os.environ,
            "ANTIOOM_MAX_UPLOAD_BYTES": str(1 << 40),
            "ANTIOOM_RATE_LIMIT_PER_MINUTE": "0",
        }
        command = [
            str(antioom_bin()),
            "serve",
            "--port",
            str(self.port),
            "--db",
            pg_url,
            "--datasets",
            str(DATASETS_TOML),
        ]
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=self._log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            raise BenchmarkError(f"antioom serve did not start:\n{tail(read_tail(self._log))}")
        self.peak_kb = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        while not self._stop.wait(0.05):
            try:
                text = status.read_text()
            except OSError:
                return
            match = re.search(r"^VmRSS:\s+(\d+)", text, re.MULTILINE)
            if match:
                self.peak_kb = max(self.peak_kb, int(match.group(1)))

    def reset_peak(self) -> None:
        self.peak_kb = 0

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    def upload_command(self, data: DataFile, dataset: str) -> list[str]:
        """curl's streaming multipart upload (-F reads the file as it sends)."""
        return [
            "curl",
            "-sS",
            "--fail-with-body",
            "-F",
            f"file=@{data.path}",
            f"{self.url}/imports?dataset={dataset}",
        ]

    def stop(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def http_case(
    data: DataFile, server: ServerUnderTest, pg_url: str, server_peaks: dict[str, list[float]]
) -> Case:
    """curl → antioom serve → PostgreSQL against the CLI import of the same file."""
    table_reset = pg_reset(pg_url, "products_plain", PG_PLAIN_DDL)
    count = pg_count(pg_url, "products_plain")

    def reset() -> None:
        table_reset()
        server.reset_peak()

    def count_and_record_peak() -> int:
        server_peaks.setdefault(data.label, []).append(server.peak_mb)
        return count()

    return Case(
        "http-upload",
        "HTTP upload -> PostgreSQL",
        Contender(
            "curl -> antioom serve",
            server.upload_command(data, "products_plain"),
            reset,
            count_and_record_peak,
            antioom=True,
        ),
        replace(
            antioom_contender(data, pg_url, "products_plain", table_reset, count),
            tool="antioom import (CLI)",
        ),
        Target(1.1, "<= 1.1x the CLI"),
    )


def concurrent_uploads(
    server: ServerUnderTest, data: DataFile, pg_url: str, uploads: int
) -> tuple[float, float]:
    """``uploads`` simultaneous curl uploads of ``data``; returns (wall s, server peak MiB)."""
    pg_reset(pg_url, "products_plain", PG_PLAIN_DDL)()
    server.reset_peak()
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            server.upload_command(data, "products_plain"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(uploads)
    ]
    for proc in procs:
        out, err = proc.communicate()
        summary = parse_summary(out.decode(), what="concurrent upload")
        if proc.returncode != 0 or summary.get("processed") != data.rows:
            raise BenchmarkError(f"concurrent upload failed: {out[-500:]!r} {err[-500:]!r}")
    wall = time.perf_counter() - t0
    count = pg_count(pg_url, "products_plain")()
    if count != uploads * data.rows:
        raise BenchmarkError(f"concurrent uploads: {count} rows, expected {uploads * data.rows}")
    return wall, server.peak_mb


def http_section(
    server_peaks: dict[str, list[float]], concurrent: tuple[DataFile, int, float, float] | None
) -> list[str]:
    if not server_peaks:
        return []
    labels = sorted(server_peaks, key=parse_size)
    lines = [
        "## Memory (HTTP server)",
        "",
        "Peak RSS of the `antioom serve` process (MiB, sampled every 50 ms) while curl streams "
        "the file. Targets: <= 160 MB and flat across sizes; 4 concurrent 250 MB uploads "
        "together < 250 MB.",
        "",
        "| size | server peak RSS per upload | max | <= 160? |",
        "|---|---|---:|---|",
    ]
    for label in labels:
        peaks = server_peaks[label]
        if peaks:
            ok = "yes" if max(peaks) <= 160 else "**no**"
            runs = ", ".join(f"{p:.1f}" for p in peaks)
            lines.append(f"| {label} | {runs} | {max(peaks):.1f} | {ok} |")
    if concurrent is not None:
        data, uploads, wall, peak = concurrent
        ok = "yes" if peak < 250 else "**no**"
        lines += [
            "",
            f"{uploads} concurrent uploads of the {data.label} file ({data.rows:,} rows each) into "
            f"PostgreSQL: {wall:.1f} s in all, server peak RSS **{peak:.1f} MiB** "
            f"(< 250? {ok}).",
        ]
    return [*lines, ""]


# --------------------------------------------------------------------------------------------
# Data files


def parse_size(text: str) -> int:
    """``10MB`` -> 10_000_000 (KB/MB/GB are decimal, KiB/MiB/GiB binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 10MB, 100MB, 1GB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def ensure_data(label: str) -> DataFile:
    """The products file for ``label``, generated unless a matching one is already cached.

    Generation runs in a subprocess so this process never imports pyarrow (see module doc).
    A sidecar JSON records the generator's stats; the file is reused if both agree.
    """
    size = parse_size(label)
    path = DATA_DIR / f"products-{label}.csv"
    meta = path.with_suffix(".json")
    wanted = {"size_bytes": size, "seed": SEED}
    if path.exists() and meta.exists():
        recorded = json.loads(meta.read_text())
        same = all(recorded.get(k) == v for k, v in wanted.items())
        if same and path.stat().st_size == recorded.get("bytes"):
            log(f"reusing {path.relative_to(REPO)} ({recorded['rows']:,} rows)")
            return DataFile(label, size, path, recorded["rows"], recorded["bytes"])
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log(f"generating {path.relative_to(REPO)} ({size:,} bytes) ...")
    t0 = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve()), "--generate-worker", str(path)]
    out = check([*command, str(size)], what=f"generate {label}")
    stats = json.loads(out)
    elapsed = time.perf_counter() - t0
    log(f"  {stats['rows']:,} rows, {stats['bytes'] / elapsed / 1e6:.0f} MB/s")
    meta.write_text(json.dumps({**wanted, **stats}, indent=2) + "\n")
    return DataFile(label, size, path, stats["rows"], stats["bytes"])


def import_antioom() -> None:
    """Make ``antioom`` importable even when the package is not installed in the venv."""
    try:
        import antioom  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO / "src"))


def generate_worker(path: str, size: str) -> None:
    """Subprocess entry point: write the file, print the generator's stats as JSON."""
    import_antioom()
    from antioom.generate import generate_products

    tmp = Path(f"{path}.partial")
    with open(tmp, "wb") as out:
        stats = generate_products(out, size_bytes=int(size), seed=SEED)
    tmp.replace(path)
    print(json.dumps({"rows": stats.rows, "bytes": stats.bytes}))


def pandas_worker(kind: str, path: str, target: str, table: str) -> None:
    """Subprocess entry point: the common pandas loader, chunked so it does not load it all.

    ``to_sql(method=None)`` is pandas' default executemany path; ``index=False`` because the
    pre-created table has no index column.
    """
    import pandas as pd  # type: ignore[import-untyped]

    rows = 0
    if kind == "sqlite":
        con = sqlite3.connect(target)
        try:
            for chunk in pd.read_csv(path, chunksize=PANDAS_CHUNKSIZE):
                rows += len(chunk)
                chunk.to_sql(table, con, if_exists="append", index=False, method=None)
            con.commit()
        finally:
            con.close()
    else:
        from sqlalchemy import create_engine

        url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", target)
        engine = create_engine(url)
        try:
            for chunk in pd.read_csv(path, chunksize=PANDAS_CHUNKSIZE):
                rows += len(chunk)
                chunk.to_sql(table, engine, if_exists="append", index=False, method=None)
        finally:
            engine.dispose()
    print(json.dumps({"rows": rows}))


# --------------------------------------------------------------------------------------------
# Report


def machine_lines(pg_url: str | None) -> list[str]:
    """Where the numbers come from: hardware and every tool's version."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = re.search(r"^MemTotal:\s*(\d+)", meminfo, re.MULTILINE)
    sqlite_cli = check(["sqlite3", "--version"], what="sqlite3 --version").split()[0]
    lines = [
        f"- CPU: {model.group(1) if model else platform.processor() or 'unknown'}, "
        f"{os.cpu_count()} logical cores (nproc {len(os.sched_getaffinity(0))})",
        f"- RAM: {int(mem_kb.group(1)) / 2**20:.1f} GiB" if mem_kb else "- RAM: unknown",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}, pyarrow {package_version('pyarrow')}, "
        f"antioom {package_version('antioom')}, pandas {package_version('pandas')}, "
        f"SQLAlchemy {package_version('sqlalchemy')}, psycopg {package_version('psycopg')}",
        f"- SQLite: sqlite3 CLI {sqlite_cli}, Python's sqlite3 module {sqlite3.sqlite_version}",
    ]
    if pg_url is not None:
        server = check(psql(pg_url, "-tA", "-c", "SHOW server_version"), what="server version")
        client = check(["psql", "--version"], what="psql --version").strip()
        lines.append(f"- PostgreSQL server {server.strip()} on the same machine; {client}")
    return lines


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def fmt_rss(measurement: Measurement) -> str:
    if measurement.rss_at_floor:
        return f"<= {measurement.peak_rss_mb:.0f}"
    return f"{measurement.peak_rss_mb:.1f}"


def size_table(pairs: list[tuple[Measurement | None, Measurement]]) -> list[str]:
    """The per-size comparison table; ratio, target and verdict sit on the antioom row."""
    lines = [
        "| case | tool | median wall s | rows/s | peak RSS MB | CPU s: tool / rest "
        "| ratio (antioom / baseline) | target | met? |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for ours, theirs in pairs:
        case = theirs.case
        if ours is not None:
            ratio = ours.median_wall_s / theirs.median_wall_s
            met = "yes" if ratio <= case.target.max_ratio else "**no**"
            lines.append(
                f"| {case.title} | {ours.contender.tool} | {ours.median_wall_s:.2f} "
                f"| {ours.rows_per_s:,.0f} "
                f"| {fmt_rss(ours)} | {fmt_cpu(ours)} | {ratio:.2f} | {case.target.label} "
                f"| {met} |"
            )
        lines.append(
            f"| {case.title} | {theirs.contender.tool} | {theirs.median_wall_s:.2f} "
            f"| {theirs.rows_per_s:,.0f} | {fmt_rss(theirs)} | {fmt_cpu(theirs)} | | | |"
        )
    return lines


def fmt_cpu(measurement: Measurement) -> str:
    return f"{measurement.cpu_s:.1f} / {measurement.other_cpu_s:.1f}"


def memory_section(results: dict[str, list[tuple[Measurement | None, Measurement]]]) -> list[str]:
    """antioom's peak RSS per case and size, its growth from the smallest size, and verdicts."""
    labels = list(results)
    per_case: dict[str, dict[str, Measurement]] = {}
    for label, pairs in results.items():
        for ours, _ in pairs:
            if ours is not None and ours.case.key.startswith(("sqlite-", "pg-")):
                per_case.setdefault(ours.case.title, {})[label] = ours
    if not per_case:
        return []
    base = "10MB" if "10MB" in labels else labels[0]
    largest = max(labels, key=parse_size)
    span = f"{largest} - {base}" if largest != base else "(needs two sizes)"
    lines = [
        "## Memory (antioom)",
        "",
        "Peak RSS in MiB per run (max over repeats). Targets: peak <= 128 MB; growth "
        "RSS(largest size) - RSS(10MB) <= 16 MB.",
        "",
        "| case | " + " | ".join(labels) + f" | growth {span} | peak <= 128? | growth <= 16? |",
        "|---|" + "---:|" * len(labels) + "---:|---|---|",
    ]
    for title, by_label in per_case.items():
        peaks = [by_label[label].peak_rss_mb for label in labels if label in by_label]
        peak_ok = "yes" if max(peaks) <= 128 else "**no**"
        if base in by_label and largest in by_label and base != largest:
            growth = by_label[largest].peak_rss_mb - by_label[base].peak_rss_mb
            growth_cell = f"{growth:+.1f}"
            growth_ok = "yes" if growth <= 16 else "**no**"
        else:
            growth_cell, growth_ok = "n/a", "n/a (one size)"
        cells = [
            f"{by_label[label].peak_rss_mb:.1f}" if label in by_label else "" for label in labels
        ]
        lines.append(
            f"| {title} | " + " | ".join(cells) + f" | {growth_cell} | {peak_ok} | {growth_ok} |"
        )
    return [*lines, ""]


def raw_runs_section(results: dict[str, list[tuple[Measurement | None, Measurement]]]) -> list[str]:
    """Every single run, so a median can be checked against its spread."""
    lines = [
        "<details><summary>Every run (wall s / peak RSS MiB, in run order)</summary>",
        "",
        "| size | case | tool | runs | antioom --json rows/s, peak_rss_mb |",
        "|---|---|---|---|---|",
    ]
    for label, pairs in results.items():
        for pair in pairs:
            for measurement in pair:
                if measurement is None:
                    continue
                runs = ", ".join(f"{r.wall_s:.2f} / {r.peak_rss_mb:.1f}" for r in measurement.runs)
                reported = "; ".join(
                    f"{r.summary.get('rows_per_s')}, {r.summary.get('peak_rss_mb')}"
                    for r in measurement.runs
                    if r.summary is not None
                )
                lines.append(
                    f"| {label} | {measurement.case.title} | {measurement.contender.tool} "
                    f"| {runs} | {reported} |"
                )
    return [*lines, "", "</details>", ""]


def existing_analysis(path: Path) -> str:
    """The hand-written ``## Analysis`` section of an earlier RESULTS.md (up to the next
    ``## `` heading), so regenerating the numbers never loses it."""
    if not path.exists():
        return f"{ANALYSIS_HEADING}\n\n{ANALYSIS_PLACEHOLDER}\n"
    text = path.read_text()
    match = re.search(
        rf"^{re.escape(ANALYSIS_HEADING)}[ \t]*\n.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL
    )
    if match is None:
        return f"{ANALYSIS_HEADING}\n\n{ANALYSIS_PLACEHOLDER}\n"
    return match.group(0).rstrip() + "\n"


def write_results(
    config: Config,
    files: list[DataFile],
    results: dict[str, list[tuple[Measurement | None, Measurement]]],
    repeats: dict[str, int],
    http_lines: list[str],
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = shlex.join([".venv/bin/python", "benchmarks/run.py", *config.argv])
    lines = [
        "# anti-oom benchmark results",
        "",
        f"Generated {now} by `{command}`.",
        "",
        "## Machine",
        "",
        *machine_lines(config.pg_url),
        "",
        "## Method",
        "",
        "- Input: products CSVs (`sku,name,price`, unique SKUs, all rows valid) written by "
        f"`antioom.generate` with seed {SEED}; sizes are decimal (1 MB = 10^6 bytes).",
        "- Each case runs antioom and its baseline alternately (A B A B ...); every run is a "
        "fresh subprocess and starts from an empty, freshly created target table (SQLite: a "
        "new database file; PostgreSQL: DROP/CREATE plus CHECKPOINT). Both sides load into "
        "tables of the same shape; the row count is checked after every run. Exception: "
        "sqlite3 `.import` of the 3-column file into the 4-column `products` table would print "
        "a warning per row, so its sku-keyed baseline table leaves out `updated_at`.",
        "- Wall time is the median over the repeats; rows/s = rows / median wall time.",
        "- CPU s (medians): the tool's own user + system CPU (`os.wait4`), and the rest of "
        "the machine's busy CPU during the run (`/proc/stat`; this script only waits), which "
        "is the database server's (for curl: antioom's server and the database). A baseline "
        "whose wall time equals its database's CPU is bound by one server core.",
        "- Peak RSS is the child's `ru_maxrss` from `os.wait4` (MiB), the max over repeats. "
        "Linux folds in the pre-exec memory a child inherits from this script, so no figure "
        f"can be below the script's own peak (~{own_peak_rss_mb():.0f} MiB); such figures "
        "are shown as `<= N`.",
        "- psql's RSS is the client only: the PostgreSQL server's memory is not in the figure "
        "(nor is it for antioom against PostgreSQL).",
        "- antioom's JSON summary (status `completed`, `processed` == rows) is checked after "
        "each of its runs; its own `rows_per_s`/`peak_rss_mb` are listed under every run. Wall "
        "time includes interpreter start-up for antioom and pandas alike.",
        "- pandas: `read_csv(chunksize=100_000)` + `to_sql(if_exists='append', method=None)` "
        "through a `sqlite3` connection or a SQLAlchemy `postgresql+psycopg` engine, run as its "
        "own subprocess; each pandas case re-runs antioom's insert alongside it so the pair "
        "alternates like the others.",
        "",
    ]
    for data in files:
        lines += [
            f"## {data.label}: {data.rows:,} rows, {data.bytes:,} bytes, "
            f"{repeats[data.label]} run(s) per tool",
            "",
            *size_table(results[data.label]),
            "",
        ]
    lines += memory_section(results)
    lines += http_lines
    lines += raw_runs_section(results)
    analysis = existing_analysis(config.output)
    config.output.write_text("\n".join(lines) + "\n" + analysis)
    log(f"wrote {config.output}")


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--large", action="store_true", help=f"add {LARGE_SIZE} to the sizes")
    parser.add_argument(
        "--sizes", help=f"comma-separated sizes (default {','.join(DEFAULT_SIZES)})"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs per tool and case (default 2 up to 100MB, 1 above)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("ANTIOOM_BENCH_PG_URL", DEFAULT_PG_URL),
        help=f"PostgreSQL URL (default $ANTIOOM_BENCH_PG_URL or {DEFAULT_PG_URL})",
    )
    parser.add_argument("--skip-pandas", action="store_true", help="leave out the pandas cases")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite cases only")
    parser.add_argument("--skip-http", action="store_true", help="leave out the HTTP cases")
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("ANTIOOM_BENCH_MYSQL_URL", DEFAULT_MYSQL_URL),
        help=f"MariaDB/MySQL URL (default $ANTIOOM_BENCH_MYSQL_URL or {DEFAULT_MYSQL_URL})",
    )
    parser.add_argument("--skip-mysql", action="store_true", help="leave out the MariaDB case")
    parser.add_argument(
        "--skip-antioom", action="store_true", help="baselines only (e.g. to test this script)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_MD, help="where to write results")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",")] if args.sizes else list(DEFAULT_SIZES)
    if args.large and LARGE_SIZE not in sizes:
        sizes.append(LARGE_SIZE)
    for size in sizes:
        try:
            parse_size(size)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return Config(
        sizes=sorted(sizes, key=parse_size),
        repeat=args.repeat,
        pg_url=None if args.skip_postgres else args.pg_url,
        mysql_url=None if args.skip_mysql else args.mysql_url,
        pandas=not args.skip_pandas,
        antioom=not args.skip_antioom,
        http=not (args.skip_http or args.skip_antioom or args.skip_postgres),
        output=args.output,
        argv=argv,
    )


def preflight(config: Config) -> None:
    """Fail before generating gigabytes if a tool or the database is missing."""
    tools = [
        "sqlite3",
        *(["psql"] if config.pg_url else []),
        *(["mariadb"] if config.mysql_url else []),
    ]
    for tool in tools:
        if shutil.which(tool) is None:
            raise BenchmarkError(f"{tool} is not on PATH")
    if config.antioom:
        check([str(antioom_bin()), "import", "--help"], what="antioom import --help")
    if config.pg_url is not None:
        check(psql(config.pg_url, "-c", "SELECT 1"), what=f"connect to {config.pg_url}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--generate-worker"]:
        generate_worker(*argv[1:3])
        return 0
    if argv[:1] == ["--pandas-worker"]:
        pandas_worker(*argv[1:5])
        return 0
    config = parse_args(argv)
    try:
        preflight(config)
        files = [ensure_data(label) for label in config.sizes]
        results: dict[str, list[tuple[Measurement | None, Measurement]]] = {}
        repeats: dict[str, int] = {}
        server_peaks: dict[str, list[float]] = {}
        concurrent = None
        server = ServerUnderTest(config.pg_url) if config.http and config.pg_url else None
        try:
            for data in files:
                repeat = config.repeat or (2 if data.size_bytes <= parse_size("100MB") else 1)
                repeats[data.label] = repeat
                log(f"== {data.label}: {data.rows:,} rows, {repeat} run(s) per tool")
                cases = build_cases(data, config)
                if server is not None and config.pg_url is not None:
                    cases.append(http_case(data, server, config.pg_url, server_peaks))
                results[data.label] = [
                    run_case(case, data, repeat, with_antioom=config.antioom) for case in cases
                ]
            if server is not None and config.pg_url is not None and len(files) > 1:
                big = ensure_data(CONCURRENT_SIZE)
                log(f"== {CONCURRENT_UPLOADS} concurrent uploads of {big.label}")
                wall, peak = concurrent_uploads(server, big, config.pg_url, CONCURRENT_UPLOADS)
                log(f"  {wall:.1f} s, server peak RSS {peak:.1f} MiB")
                concurrent = (big, CONCURRENT_UPLOADS, wall, peak)
        finally:
            if server is not None:
                server.stop()
        write_results(config, files, results, repeats, http_section(server_peaks, concurrent))
    except BenchmarkError as exc:
        log(f"BENCHMARK FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
