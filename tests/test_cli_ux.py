"""What a user of the CLI sees: ``--version``, ``-h``, help texts (defaults, environment
variables, examples, exit codes, flags as flags), ``antioom upload`` without a target, the
progress bar on a terminal, and the rejects counted by reason in the summary."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import antioom_command, clean_env, fetch
from server_helpers import products_csv, serve
from test_readme import section

from antioom.engine.progress import MAX_REASONS, OTHER_REASON, Meter, Summary, reason_key
from antioom.engine.rejects import Reject

COMMANDS = ("import", "generate", "serve", "upload", "worker")
README_SECTIONS = {
    "import": "`antioom import PATH|-`",
    "generate": "`antioom generate OUT`",
    "serve": "`antioom serve`",
    "upload": "`antioom upload PATH|-`",
    "worker": "`antioom worker`",
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``antioom ARGS`` with a wide, plain terminal for the help's layout."""
    return subprocess.run(
        [*antioom_command(), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(COLUMNS="200", NO_COLOR="1", TERM="dumb"),
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"antioom {version('antioom')}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_short_and_long_help(command: str | None) -> None:
    args = [command] if command else []
    short, long = run(*args, "-h"), run(*args, "--help")
    assert short.returncode == long.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert "Usage: antioom" in short.stdout
    assert "<bool>" not in short.stdout  # flags read as flags: --json, not --json <bool>
    flag = re.search(r"^.*--help\s+-h\s*(\S.*)$", short.stdout, re.MULTILINE)
    assert flag and flag.group(1).startswith("Show this message"), short.stdout


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (
            "import",
            [
                "[env var: ANTIOOM_DB_URL]",
                "[default: sqlite:///antioom.db]",
                "[env var: ANTIOOM_DATASETS]",
                "[default: 20000]",
                "[default: 1MiB]",
                "[default: detected among , | ; tab]",
                "[default: detected]",
                "antioom import products.csv --dataset products",
                "Exit codes",
                "130 interrupted",
            ],
        ),
        ("generate", ["antioom generate products.csv --size 100MB", "[default: 0]"]),
        ("serve", ["[env var: ANTIOOM_PORT]", "[default: 8000]", "[env var: ANTIOOM_HOST]"]),
        (
            "upload",
            [
                "[env var: ANTIOOM_TOKEN]",
                "[default: products, as POST /upload, unless --table is given]",
                "[default: 3]",
                "antioom upload products.csv --url http://127.0.0.1:8000",
                "4 the server is unreachable or unavailable (503)",
            ],
        ),
    ],
)
def test_help_shows_defaults_env_vars_examples_and_exit_codes(
    command: str, shown: list[str]
) -> None:
    text = run(command, "-h").stdout
    flat = " ".join(line.strip(" │╭╮╰╯─") for line in text.splitlines())  # unwrapped
    flat = re.sub(r"\s+", " ", flat)
    for item in shown:
        assert item in flat, (item, text)
    for flag in ("--json", "--quiet", "--resume", "--no-infer", "--gzip"):
        for line in text.splitlines():
            if re.search(rf"\s{flag}\s", line):
                assert not re.search(r"<\w+>", line), line


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_documents_every_option(command: str) -> None:
    documented = section(README_SECTIONS[command]) + section("Configuration")
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", run(command, "-h").stdout))
    missing = sorted(o for o in options - {"--help"} if o not in documented)
    assert not missing, f"README's {command} section does not name {missing}"


def test_upload_without_a_target_goes_to_products(tmp_path: Path) -> None:
    """As ``POST /upload``: neither --dataset nor --table means the products dataset."""
    data = tmp_path / "p.csv"
    data.write_bytes(products_csv(3000, bad_every=1000))
    with serve(tmp_path) as server:
        result = run("upload", data, "--url", server.url, "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert (record["dataset"], record["table"]) == ("products", "products")
        assert (record["processed"], record["failed"]) == (2997, 3)
        assert record["rejects_by_reason"] == {"price: must be > 0": 3}
        text = run("upload", data, "--url", server.url, "--quiet", cwd=tmp_path)
        assert text.returncode == 0, text.stderr
        assert text.stdout.startswith("completed: 2,997 rows written to products, 3 rejected")
        assert "rejected rows by reason:\n  3  price: must be > 0\n" in text.stdout
        typed = run("upload", data, "--url", server.url, "--type", "sku=string", cwd=tmp_path)
        assert typed.returncode == 2
        assert "--type and --no-infer apply to --table imports" in typed.stderr
    assert fetch(server.db_url, "SELECT count(*) FROM products") == [(2997,)]


def test_import_without_a_target_says_what_to_add(tmp_path: Path) -> None:
    data = tmp_path / "p.csv"
    data.write_bytes(products_csv(3))
    result = run("import", data, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "antioom: error: choose a dataset or a table to import into: add --dataset NAME "
        "(built in: --dataset products) or --table NAME"
    )


def test_summary_counts_rejects_by_reason(tmp_path: Path) -> None:
    generated = run(
        "generate", "bad.csv", "--rows", "20000", "--invalid-ratio", "0.05", cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    text = run("import", "bad.csv", "--dataset", "products", "--quiet", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    first = text.stdout.splitlines()[0]
    failed = int(re.search(r", ([\d,]+) rejected", first).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert re.match(
        r"completed: [\d,]+ rows written to products, [\d,]+ rejected, 20,000 read", first
    )
    table = text.stdout.split("rejected rows by reason:\n")[1].split("first rejected rows")[0]
    counts = {
        reason: int(count.replace(",", ""))
        for count, reason in re.findall(r"^\s+([\d,]+)  (.+)$", table, re.MULTILINE)
    }
    assert set(counts) == {
        "price: must be > 0",
        "price: not a number",
        "name: required value is missing",
        "sku: required value is missing",
    }
    assert sum(counts.values()) == failed
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    as_json = run("import", "bad.csv", "--dataset", "products", "--json", cwd=tmp_path)
    summary = json.loads(as_json.stdout)
    assert summary["rejects_by_reason"] == counts


def test_reasons_are_grouped_and_bounded() -> None:
    meter = Meter(Summary("id", "running", "d", "t"))
    for value in ("abc", "x y", "7"):
        meter.rejected(Reject(1, "qty", f'invalid input syntax for type integer: "{value}"'))
    meter.rejected(Reject(2, None, "expected 3 fields, found 4"))
    for n in range(MAX_REASONS + 10):
        meter.rejected(Reject(3, "c", f"reason {n}"))
    counts = meter.summary.rejects_by_reason
    assert counts['qty: invalid input syntax for type integer: "…"'] == 3
    assert counts["expected 3 fields, found 4"] == 1
    assert len(counts) == MAX_REASONS + 1
    assert counts[OTHER_REASON] == 12
    assert sum(counts.values()) == meter.summary.failed
    assert reason_key(Reject(1, "name", "Incorrect string value: '\\xF0' for column 'n'")) == (
        "name: Incorrect string value: '…' for column '…'"
    )


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """On a TTY: rows and rejects with thousands separators, and a labelled ETA."""
    generated = run(
        "generate", "big.csv", "--rows", "300000", "--invalid-ratio", "0.01", cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*antioom_command(), "import", "big.csv", "--dataset", "products"],
        cwd=tmp_path,
        env=clean_env(COLUMNS="160", TERM="xterm"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the process closed its end
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    stdout = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0
    shown = ANSI.sub("", seen.decode("utf-8", "replace"))
    assert re.search(r"\b\d{1,3}(,\d{3})+ rows, \d{1,3}(,\d{3})+ rejected", shown), shown[-2000:]
    assert re.search(r"ETA \d+:\d\d:\d\d", shown), shown[-2000:]
    assert stdout.startswith("completed: ")
