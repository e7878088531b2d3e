"""``antioom upload``: the streaming client against a real ``antioom serve`` process."""

from __future__ import annotations

import gzip
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import antioom_command, clean_env
from server_helpers import Served, free_port, serve

from antioom.client import csv_params, imports_url, upload_file

ROWS = 50_000


def run(
    *args: str | Path | int, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``antioom ARGS`` (stdin closed, not a TTY) and capture its output."""
    return subprocess.run(
        [*antioom_command(), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(**(env or {})),
        stdin=subprocess.DEVNULL,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def products_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated products CSV of ``ROWS`` valid rows."""
    path = tmp_path_factory.mktemp("upload") / "products.csv"
    result = run("generate", path, "--rows", ROWS, cwd=path.parent)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module (each test uses its own import IDs and tables)."""
    with serve(tmp_path_factory.mktemp("server")) as served:
        yield served


def assert_completed(summary: dict[str, object], rows: int = ROWS) -> None:
    assert summary["status"] == "completed"
    assert summary["processed"] == rows
    assert summary["failed"] == 0
    assert summary["rows"] == rows


def test_upload_prints_the_summary_as_json(
    server: Served, products_file: Path, tmp_path: Path
) -> None:
    result = run(
        "upload",
        products_file,
        "--url",
        server.url,
        "--dataset",
        "products",
        "--json",
        "--import-id",
        "cli-plain",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    summary = json.loads(lines[0])
    assert_completed(summary)
    assert summary["id"] == "cli-plain"
    assert summary["bytes"] == products_file.stat().st_size
    assert summary["rejects_url"] == "/imports/cli-plain/rejects"
    assert "Traceback" not in result.stderr


def test_upload_gzip_compresses_on_the_fly(
    server: Served, products_file: Path, tmp_path: Path
) -> None:
    result = run(
        "upload",
        products_file,
        "--url",
        server.url + "/",
        "--table",
        "zipped",
        "--gzip",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert_completed(summary)
    assert summary["table"] == "zipped"
    # The server read the compressed stream: far fewer bytes than the file.
    assert 0 < summary["bytes"] < products_file.stat().st_size // 2


def test_upload_from_stdin_in_human_form(
    server: Served, products_file: Path, tmp_path: Path
) -> None:
    with open(products_file, "rb") as stdin:
        completed = subprocess.run(
            [*antioom_command(), "upload", "-", "--url", server.url, "--dataset", "products"],
            stdin=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=clean_env(),
            timeout=180,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"completed: {ROWS:,} rows written to products, 0 rejected")


def test_upload_file_api_reports_progress(server: Served, products_file: Path) -> None:
    seen: list[int] = []
    summary = upload_file(
        str(products_file), server.url, dataset="products", compress=True, on_progress=seen.append
    )
    assert_completed(summary)
    assert seen == sorted(seen)
    assert seen[-1] == products_file.stat().st_size


def test_bad_token_exits_2_with_the_server_message(products_file: Path, tmp_path: Path) -> None:
    with serve(tmp_path, env={"ANTIOOM_API_KEYS": "secret"}) as server:
        bad = run(
            "upload",
            products_file,
            "--url",
            server.url,
            "--dataset",
            "products",
            "--token",
            "wrong",
            cwd=tmp_path,
        )
        missing = run(
            "upload", products_file, "--url", server.url, "--dataset", "products", cwd=tmp_path
        )
        good = run(
            "upload",
            products_file,
            "--url",
            server.url,
            "--dataset",
            "products",
            "--json",
            cwd=tmp_path,
            env={"ANTIOOM_TOKEN": "secret"},
        )
    for result in (bad, missing):
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        error_lines = [line for line in result.stderr.splitlines() if "error" in line]
        assert error_lines == ["antioom: error: HTTP 401: missing or invalid bearer token"]
        assert "Traceback" not in result.stderr
    assert good.returncode == 0, good.stderr
    assert_completed(json.loads(good.stdout))


def test_server_errors_exit_2_with_one_line(
    server: Served, products_file: Path, tmp_path: Path
) -> None:
    unknown = run("upload", products_file, "--url", server.url, "--dataset", "nope", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1].startswith("antioom: error: HTTP 400: unknown")
    first = run(
        "upload",
        products_file,
        "--url",
        server.url,
        "--table",
        "t",
        "--import-id",
        "same",
        "--json",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    again = run(
        "upload",
        products_file,
        "--url",
        server.url,
        "--table",
        "t",
        "--import-id",
        "same",
        cwd=tmp_path,
    )
    assert again.returncode == 2
    last = again.stderr.splitlines()[-1]
    assert last == "antioom: error: HTTP 409: import same already completed"


def test_server_down_exits_4(products_file: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("upload", products_file, "--url", url, "--dataset", "products", cwd=tmp_path)
    assert result.returncode == 4
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"antioom: error: cannot connect to {url}/imports")


def test_usage_errors_exit_2_before_sending(products_file: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: options are checked first
    both = run(
        "upload", products_file, "--url", url, "--dataset", "a", "--table", "b", cwd=tmp_path
    )
    assert both.returncode == 2
    assert both.stderr.strip() == "antioom: error: give --dataset or --table, not both"
    neither = run("upload", products_file, "--url", url, cwd=tmp_path)  # the products dataset
    assert neither.returncode == 4, neither.stderr  # so it connects: nothing listens
    bad_url = run("upload", products_file, "--url", "localhost:8000", "--table", "t", cwd=tmp_path)
    assert bad_url.returncode == 2
    missing = run("upload", tmp_path / "missing.csv", "--url", url, "--table", "t", cwd=tmp_path)
    assert missing.returncode == 3
    assert missing.stderr.strip().startswith("antioom: error: cannot read")


def test_imports_url() -> None:
    assert imports_url("http://h:1") == "http://h:1/imports"
    assert imports_url("http://h:1/") == "http://h:1/imports"
    assert imports_url("https://h/base/imports/") == "https://h/base/imports"


def test_gzip_stream_is_valid(tmp_path: Path) -> None:
    from antioom.client import _chunks, _gzip

    data = b"sku,name,price\n" + b"SKU-1,A,1.5\n" * 300_000
    path = tmp_path / "x.csv"
    path.write_bytes(data)
    with open(path, "rb") as source:
        body = b"".join(_gzip(_chunks(source, None)))
    assert gzip.decompress(body) == data


def test_upload_sends_the_csv_options(server: Served, tmp_path: Path, fetch: Any) -> None:
    path = tmp_path / "zips.csv"
    path.write_bytes("00501;Holtsville\n01001;Agawam\n99950;Ketchikan, AK\n".encode("latin-1"))
    result = run(
        "upload", path, "--url", server.url, "--table", "zips", "--delimiter", ";",
        "--no-header", "--columns", "zip,city", "--type", "zip=string",
        "--encoding", "latin-1", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert_completed(summary, rows=3)
    dialect = summary["dialect"]
    assert (dialect["delimiter"], dialect["header"]) == (";", False)
    assert not {"delimiter", "header", "encoding"} & set(dialect["detected"])
    rows = fetch(server.db_url, 'SELECT zip, city FROM "zips" ORDER BY zip')
    assert rows == [("00501", "Holtsville"), ("01001", "Agawam"), ("99950", "Ketchikan, AK")]

    tabbed = tmp_path / "tabbed.csv"
    tabbed.write_bytes("name\tnote\nJosé\tNA\nZoë\tfine, really\n".encode("latin-1"))
    human = run(
        "upload", tabbed, "--url", server.url, "--table", "people", "--delimiter", "\\t",
        "--encoding", "latin-1", "--null", "NA", "--no-infer", cwd=tmp_path,
    )  # fmt: skip
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith("completed: 2 rows written to people, 0 rejected")
    assert lines[1] == (
        "read as: delimiter '\\t', quote '\"' (detected), no escape (detected), "
        "header (detected), encoding iso8859-1"
    )
    rows = fetch(server.db_url, 'SELECT name, note FROM "people" ORDER BY name')
    assert rows == [("José", None), ("Zoë", "fine, really")]


def test_upload_file_api_with_csv_params(server: Served, tmp_path: Path, fetch: Any) -> None:
    path = tmp_path / "pipe.csv"
    path.write_bytes(b"# a comment\nid|price\n1|007\n2|1.50\n")
    params = csv_params(delimiter="|", comment="#", types={"price": "string"})
    assert params == {"delimiter": "|", "comment": "#", "type": ["price=string"]}
    summary = upload_file(str(path), server.url, table="pipes", params=params)
    assert_completed(summary, rows=2)
    assert fetch(server.db_url, 'SELECT id, price FROM "pipes" ORDER BY id') == [
        (1, "007"),
        (2, "1.50"),
    ]


def test_bad_csv_options_exit_2_before_sending(products_file: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: options are checked first
    for extra, message in (
        (["--table", "t", "--delimiter", ";;"], "delimiter must be one character, got ';;'"),
        (["--table", "t", "--encoding", "klingon"], "unknown encoding 'klingon'"),
        (["--table", "t", "--type", "zip"], "invalid --type 'zip': use NAME=TYPE, e.g. zip=string"),
        (["--dataset", "products", "--no-infer"], "--type and --no-infer apply to --table imports"),
    ):
        result = run("upload", products_file, "--url", url, *extra, cwd=tmp_path)
        assert result.returncode == 2, (extra, result.stderr)
        assert result.stderr.strip() == f"antioom: error: {message}", extra
