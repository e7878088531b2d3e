"""Scale-out benchmark: one file imported into PostgreSQL by 1, 2 and 4 queued workers, side by
side with a single ``antioom import`` and ``psql \\copy`` of the same file, written to
RESULTS-workers.md.

    .venv/bin/python benchmarks/workers.py [--size 1GB] [--workers 1,2,4] [--parts 4]
                                           [--pg-url URL] [--broker URL] [--output PATH]

Each case starts from an empty table. A queued case starts its ``antioom worker`` processes
first (one part at a time each), then times from ``antioom import --queue`` (which stages the
file: a copy into a local staging directory) to the import's record reading ``completed``, and
reports the staging time apart. Every case's row count is checked against the file's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import (
    DEFAULT_PG_URL,
    PG_PLAIN_DDL,
    BenchmarkError,
    DataFile,
    antioom_bin,
    check,
    ensure_data,
    log,
    machine_lines,
    measure,
    pg_copy_command,
    pg_count,
    pg_reset,
    psql,
)

BENCH_DIR = Path(__file__).resolve().parent
TABLE = "products_plain"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
PART_SEQS = 1 << 32  # a part's closing ledger row has seq (index + 1) * 2**32 - 1


def antioom(*args: str) -> list[str]:
    return [str(antioom_bin()), *args]


def record_status(pg_url: str, import_id: str) -> dict[str, str]:
    out = check(
        psql(
            pg_url,
            "-tA",
            "-F",
            "\t",
            "-c",
            "SELECT status, coalesce(error, ''), rows_read, processed, (SELECT count(*) FROM "
            f"antioom_batches WHERE import_id = '{import_id}' AND (seq + 1) % {PART_SEQS} = 0) "
            f"FROM antioom_imports WHERE id = '{import_id}'",
        ),
        what="read the import's record",
    )
    fields = out.rstrip("\n").split("\t")
    if len(fields) < 5:
        return {"status": "missing"}
    return dict(zip(("status", "error", "rows", "processed", "parts"), fields, strict=True))


def start_workers(count: int, broker: str, folder: Path) -> list[subprocess.Popen[bytes]]:
    started = []
    for index in range(count):
        with open(folder / f"worker{index}.log", "wb") as out:
            started.append(
                subprocess.Popen(
                    antioom("worker", "--broker", broker, "--loglevel", "WARNING"),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    time.sleep(3)  # connected and consuming before the job is queued
    for process in started:
        if process.poll() is not None:
            raise BenchmarkError(f"a worker exited at start: see {folder}")
    return started


def stop_workers(started: list[subprocess.Popen[bytes]]) -> None:
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def queued_case(
    data: DataFile, pg_url: str, broker: str, workers: int, parts: int
) -> tuple[float, float, str]:
    """(seconds from queuing to completed, seconds of staging, parts closed in the ledger)."""
    pg_reset(pg_url, TABLE, "SELECT 1")()  # the workers create the table (drop it first)
    with tempfile.TemporaryDirectory(prefix="antioom-bench-") as tmp:
        folder = Path(tmp)
        (folder / "staging").mkdir()
        started = start_workers(workers, broker, folder)
        try:
            began = time.perf_counter()
            _, out = measure(
                antioom(
                    "import",
                    str(data.path),
                    "--db",
                    pg_url,
                    "--table",
                    TABLE,
                    "--queue",
                    "--staging",
                    f"file://{folder / 'staging'}",
                    "--broker",
                    broker,
                    "--parts",
                    str(parts),
                    "--json",
                ),
                what="antioom import --queue",
            )
            staged_s = time.perf_counter() - began
            import_id = json.loads(out)["import_id"]
            while (record := record_status(pg_url, import_id))["status"] not in (
                "completed",
                "failed",
            ):
                time.sleep(0.05)
            total_s = time.perf_counter() - began
        finally:
            stop_workers(started)
    if record["status"] != "completed" or int(record["processed"]) != data.rows:
        raise BenchmarkError(f"{workers} worker(s): {record}")
    return total_s, staged_s, record["parts"]


def single_case(data: DataFile, pg_url: str) -> float:
    pg_reset(pg_url, TABLE, "SELECT 1")()
    run, out = measure(
        antioom("import", str(data.path), "--db", pg_url, "--table", TABLE, "--json"),
        what="antioom import",
    )
    if json.loads(out)["processed"] != data.rows:
        raise BenchmarkError(f"antioom import: {out[:300]}")
    return run.wall_s


def copy_case(data: DataFile, pg_url: str) -> float:
    pg_reset(pg_url, TABLE, PG_PLAIN_DDL)()
    run, _ = measure(pg_copy_command(pg_url, data), what="psql \\copy")
    if pg_count(pg_url, TABLE)() != data.rows:
        raise BenchmarkError("psql \\copy: wrong row count")
    return run.wall_s


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--pg-url", default=os.environ.get("ANTIOOM_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--broker", default=os.environ.get("ANTIOOM_BROKER_URL", DEFAULT_BROKER))
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS-workers.md")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    if shutil.which("psql") is None:
        raise BenchmarkError("psql is needed")
    data = ensure_data(args.size)
    log(f"psql \\copy of {data.label}")
    copy_s = copy_case(data, args.pg_url)
    log(f"antioom import of {data.label}")
    single_s = single_case(data, args.pg_url)
    rows = []
    for workers in counts:
        log(f"{workers} worker(s), {args.parts} parts")
        total_s, staged_s, parts = queued_case(data, args.pg_url, args.broker, workers, args.parts)
        rows.append((workers, total_s, staged_s, parts))
    lines = [
        "# Queued imports: scaling with workers",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: "
        f"`.venv/bin/python benchmarks/workers.py {' '.join(argv)}`",
        "",
        *machine_lines(args.pg_url),
        "",
        f"{data.label} products file ({data.rows:,} rows, {data.bytes:,} bytes) into an empty "
        f"PostgreSQL table, split into {args.parts} parts; queued times run from "
        "`antioom import --queue` to the record reading `completed` (staging included).",
        "",
        "| case | wall | of which staging | rows/s | vs `psql \\copy` | vs one `antioom import` |",
        "|---|---:|---:|---:|---:|---:|",
        f"| `psql \\copy` | {copy_s:.1f} s | | {data.rows / copy_s:,.0f} | 1.00 | "
        f"{copy_s / single_s:.2f} |",
        f"| `antioom import` (one process) | {single_s:.1f} s | | {data.rows / single_s:,.0f} "
        f"| {single_s / copy_s:.2f} | 1.00 |",
    ]
    for workers, total_s, staged_s, _ in rows:
        lines.append(
            f"| {workers} worker(s) | {total_s:.1f} s | {staged_s:.1f} s | "
            f"{data.rows / total_s:,.0f} | {total_s / copy_s:.2f} | {total_s / single_s:.2f} |"
        )
    lines += ["", "Parts closed in the ledger: " + ", ".join(str(r[3]) for r in rows) + "."]
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log(f"wrote {args.output}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        sys.exit(1)
