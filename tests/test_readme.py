"""The README's commands, run as written: the quick start's and the CLI section's ``sh`` blocks.

The commands are taken from README.md itself (a changed README is tested as it is), run with
bash in a temporary directory, and must exit 0. What the test changes, and only that:

* the port: ``127.0.0.1:8000`` and ``--port N`` become a free port, and ``make run`` gets it as
  ``ANTIOOM_PORT`` (so parallel runs and a developer's own server on 8000 do not collide);
* the size of the sample: ``make run`` gets ``SAMPLE_SIZE=2MB`` (a Makefile variable, from the
  environment) and ``antioom generate … --size 100MB`` becomes ``--size 1MB``;
* the install step of ``make run``: the temporary directory holds a copy of the Makefile and
  pyproject.toml, ``.venv`` is a link to the virtualenv running this test, and ``STAMP`` (the
  Makefile's "installed" marker) is a fresh file given through ``MAKEFLAGS``, so make does not
  reinstall; ``make test`` (which would run this test again) is only dry-run (``make -n``);
* the user's files the CLI examples name (``events.csv``, ``export.csv``, ``big.csv``) are
  written first; the example that needs a PostgreSQL server is left out (the test lists it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import clean_env
from server_helpers import free_port, serve, wait_health

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV = Path(sys.prefix)
CLI_SECTIONS = (  # in this order: generate writes the products.csv that import reads
    "`antioom generate OUT`",
    "`antioom import PATH|-`",
    "`antioom serve`",
    "`antioom upload PATH|-`",
)
NOT_LOCAL = re.compile(r"postgresql://|mysql://|mariadb://|mongodb://")
HEADING = re.compile(r"^(#+) (.*)$")


def section(title: str) -> str:
    """The README's text under the heading ``title``, up to the next heading of its level or
    above (``#`` lines inside code blocks are not headings)."""
    lines = README.read_text("utf-8").splitlines()
    level, body, fenced = 0, [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if level and heading and len(heading.group(1)) <= level:
            break
        if level:
            body.append(line)
        elif heading and heading.group(2) == title:
            level = len(heading.group(1))
    assert level, f"README.md has no section {title!r}"
    return "\n".join(body)


def commands(text: str) -> list[str]:
    """The commands of the ``sh`` blocks in ``text``: lines continued with ``\\`` joined, and a
    comment ``# or: COMMAND`` taken as a command of its own."""
    found: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            alternative = re.match(r"#\s*or:\s*(.+)", line.strip())
            if alternative:
                found.append(alternative.group(1))
            elif line.strip() and not line.lstrip().startswith("#"):
                found.append(line.strip())
    return found


def inline_commands(text: str, prefix: str) -> list[str]:
    """Inline code spans of the prose (outside code blocks) that start with ``prefix``."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return [span for span in re.findall(r"`([^`]+)`", prose) if span.startswith(prefix)]


def localize(command: str, port: int) -> str:
    """The test's substitutions (see the module docstring): a free port, a small sample."""
    command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    command = re.sub(r"--port \d+", f"--port {port}", command)
    return command.replace("--size 100MB", "--size 1MB")


def bash(
    command: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def background(command: str, cwd: Path, env: dict[str, str], url: str) -> Iterator[None]:
    """Run a serving ``command`` in a process group of its own until ``url`` is healthy, then
    stop the group with Ctrl-C (SIGINT), as a user would."""
    log = cwd / f"background-{free_port()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            wait_health(url, timeout=60, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{command}: {exc}\n{log.read_text('utf-8', 'replace')}") from None
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture
def venv() -> Path:
    if not (VENV / "bin" / "antioom").exists():
        pytest.skip(f"the tests do not run in a virtualenv with antioom installed ({VENV})")
    return VENV


def make_env(stamp: Path, port: int, *flags: str) -> dict[str, str]:
    """The environment of ``make``: the install stamp (and ``flags``) through MAKEFLAGS, the
    port and a small sample; none of an outer make's variables."""
    env = {k: v for k, v in clean_env().items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(
        MAKEFLAGS=" ".join([*flags, f"STAMP={stamp}"]),
        ANTIOOM_PORT=str(port),
        SAMPLE_SIZE="2MB",
    )
    return env


def test_quick_start(tmp_path: Path, venv: Path) -> None:
    """``make run``, then in a second terminal the upload (CLI and curl) and the serverless
    import, exactly as the quick start writes them."""
    text = section("Quick start")
    found = commands(text)
    run, test = (next(c for c in found if c.startswith(f"make {t}")) for t in ("run", "test"))
    second = [c for c in found if not c.startswith("make ")]
    assert [c.split()[0] for c in second] == [".venv/bin/antioom", "curl"], second
    (without_server,) = inline_commands(text, ".venv/bin/antioom import")

    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    os.utime(tmp_path / "pyproject.toml", (0, 0))  # older than the stamp: nothing to install
    (tmp_path / ".venv").symlink_to(venv, target_is_directory=True)
    stamp = tmp_path / "installed"
    stamp.touch()
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    dry = bash(test, tmp_path, make_env(stamp, port, "-n"))
    assert dry.returncode == 0, dry.stderr
    assert "pytest" in dry.stdout and "ruff check" in dry.stdout

    with background(run, tmp_path, make_env(stamp, port), url):
        assert (tmp_path / "products.csv").stat().st_size > 1 << 20  # SAMPLE_SIZE=2MB
        for page in ("/", "/docs", "/redoc"):
            assert httpx.get(url + page, timeout=10).status_code == 200, page
        env = clean_env()
        upload = bash(localize(second[0], port), tmp_path, env)
        assert upload.returncode == 0, upload.stderr
        assert upload.stdout.startswith("completed: "), upload.stdout
        assert " rows written to products, 0 rejected" in upload.stdout
        posted = bash(localize(second[1], port), tmp_path, env)
        assert posted.returncode == 0, posted.stderr
        answer = json.loads(posted.stdout)
        assert answer["message"] == "Upload completed" and answer["stats"]["failed"] == 0
        imported = bash(without_server, tmp_path, env)
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.startswith("completed: "), imported.stdout


def write_user_files(directory: Path, env: dict[str, str]) -> None:
    """The files the CLI examples name, small."""
    (directory / "events.csv").write_text(
        "id;kind;at\n" + "".join(f"{i};click;2026-01-{i % 28 + 1:02d}\n" for i in range(500)),
        "utf-8",
    )
    (directory / "export.csv").write_bytes(
        "id;zip;city;total\n1;08123;Zürich;12.50\n2;75001;Besançon;7.25\n".encode("cp1252")
    )
    made = bash("antioom generate big.csv --rows 20000 --invalid-ratio 0.01", directory, env)
    assert made.returncode == 0, made.stderr


def test_cli_examples(tmp_path: Path, venv: Path) -> None:
    """Every command of the CLI section's ``sh`` blocks that runs without a database server:
    generate, import, serve (started, then stopped) and upload (to a real ``antioom serve``)."""
    env = clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    write_user_files(tmp_path, env)
    left_out: list[str] = []
    ran: list[str] = []
    with serve(tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        for title in CLI_SECTIONS:
            for command in commands(section(title)):
                assert command.startswith("antioom "), command
                if NOT_LOCAL.search(command):
                    left_out.append(command)
                    continue
                if command.startswith("antioom serve"):
                    own = free_port()
                    with background(
                        localize(command, own), tmp_path, {**env, "ANTIOOM_PORT": str(own)},
                        f"http://127.0.0.1:{own}",
                    ):  # fmt: skip
                        ran.append(command)
                    continue
                result = bash(localize(command, port), tmp_path, env)
                assert result.returncode == 0, (command, result.stderr)
                if "--json" in command:
                    summary = json.loads(result.stdout)
                    assert summary["status"] == "completed", summary
                elif command.split()[1] in ("import", "upload"):
                    assert result.stdout.startswith("completed: "), (command, result.stdout)
                ran.append(command)
    assert left_out == [
        "antioom import export.csv.gz --db postgresql://localhost/shop --table orders"
    ]
    assert {command.split()[1] for command in ran} == {"generate", "import", "serve", "upload"}
    assert (tmp_path / "rejects.csv").read_text("utf-8").startswith("record,line,column,reason")
