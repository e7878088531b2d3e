"""Flat memory: importing 200 MB costs (almost) no more memory than importing 10 MB.

The CLI runs as a child process; its peak resident set size is the kernel's ``ru_maxrss`` from
``os.wait4``, so nothing is sampled and nothing is missed. The products files are generated
once per session (``antioom generate``, or a plain Python loop if that is unavailable).

Linux carries a process's memory high-water mark across ``exec`` into its ``ru_maxrss``, so a
child forked by this (large) pytest process would report at least pytest's own peak. The CLI is
therefore started by a tiny launcher process, which waits for it and reports its ``ru_maxrss``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

# The target is 128 MB for a production install (measured by `make bench`: 105-121 MB). Here
# the budget is looser: this runs in the dev venv, where a test dependency installs numpy and
# pyarrow imports it, and RSS counts shared-library pages, of which the kernel maps more when
# the files sit in the page cache (a freshly installed venv, as in CI: +30 MB measured for the
# same import). The flatness check below is the one that catches a buffer without a bound.
BUDGET_MB = 192
# Going from 10 MB to 200 MB of input may cost at most this much more peak memory.
GROWTH_MB = 16
SIZES = {"10MB": 10 << 20, "200MB": 200 << 20}
TIMEOUT_S = 240


def _generate_with_python(path: Path, size: int) -> None:
    """Fallback generator: the seed's rows, ``SKU-i,Product Name i,price``."""
    with open(path, "wb") as out:
        written = out.write(b"sku,name,price\n")
        i = 1
        while written < size:
            chunk = "".join(
                f"SKU-{n},Product Name {n},{(n * 7919) % 100000 / 100 + 1:.2f}\n"
                for n in range(i, i + 10_000)
            ).encode()
            written += out.write(chunk[: size - written])
            i += 10_000


def _generate(command: list[str], env: dict[str, str], path: Path, label: str) -> None:
    result = subprocess.run(
        [*command, "generate", str(path), "--size", label],
        capture_output=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0 or not path.exists() or path.stat().st_size < SIZES[label] * 0.9:
        _generate_with_python(path, SIZES[label])


@pytest.fixture(scope="session")
def products_files(
    tmp_path_factory: pytest.TempPathFactory, antioom_command: list[str], subprocess_env
) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("products")
    files = {}
    for label in SIZES:
        files[label] = directory / f"products-{label}.csv"
        _generate(antioom_command, subprocess_env, files[label], label)
    return files


@dataclass
class Measured:
    code: int
    peak_rss_mb: float
    summary: dict[str, Any]
    stderr: str
    db: Path


LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as out:
    out.write(f"{child.returncode} {usage.ru_maxrss}")
"""


def _import_measuring_peak(
    antioom: list[str], env: dict[str, str], csv_path: Path, directory: Path
) -> Measured:
    db = directory / f"{csv_path.stem}.db"
    out, err = directory / f"{csv_path.stem}.out", directory / f"{csv_path.stem}.err"
    rusage = directory / f"{csv_path.stem}.rusage"
    command = [*antioom, "import", str(csv_path), "--dataset", "products",
               "--db", f"sqlite:///{db}", "--json"]  # fmt: skip
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        launcher = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(rusage), *command],
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
        try:
            launcher.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
            pytest.fail(f"importing {csv_path.name} took more than {TIMEOUT_S}s")
    code, maxrss_kib = map(int, rusage.read_text().split())
    text = out.read_text()
    return Measured(
        code=code,
        peak_rss_mb=maxrss_kib / 1024,
        summary=json.loads(text) if code == 0 and text.strip() else {},
        stderr=err.read_text(),
        db=db,
    )


@pytest.fixture(scope="session")
def measured(
    products_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    antioom_command: list[str],
    subprocess_env: dict[str, str],
) -> dict[str, Measured]:
    directory = tmp_path_factory.mktemp("memory")
    return {
        label: _import_measuring_peak(antioom_command, subprocess_env, path, directory)
        for label, path in products_files.items()
    }


def test_large_import_completes_every_row(measured, products_files, fetch):
    large = measured["200MB"]
    assert large.code == 0, large.stderr
    summary = large.summary
    assert summary["status"] == "completed"
    assert summary["failed"] == 0
    assert summary["processed"] == summary["rows"] > 4_000_000
    assert summary["bytes"] == products_files["200MB"].stat().st_size
    assert fetch(f"sqlite:///{large.db}", "SELECT count(*) FROM products") == [
        (summary["processed"],)
    ]


def test_peak_memory_stays_within_the_budget(measured):
    for label, result in measured.items():
        assert result.code == 0, result.stderr
        assert result.peak_rss_mb <= BUDGET_MB, f"{label}: peak {result.peak_rss_mb:.0f} MB"


def test_peak_memory_does_not_grow_with_the_input(measured):
    small, large = measured["10MB"], measured["200MB"]
    assert small.code == large.code == 0
    growth = large.peak_rss_mb - small.peak_rss_mb
    assert growth <= GROWTH_MB, (
        f"peak {small.peak_rss_mb:.0f} MB for 10 MB, {large.peak_rss_mb:.0f} MB for 200 MB"
    )
