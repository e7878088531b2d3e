"""The ``antioom`` command line: import, generate, serve, and upload (to a server).

Exit codes: 0 done (rows may have been rejected: see the summary), 1 internal error,
2 bad options or configuration, 3 bad input, 4 database unreachable at start,
5 database failed mid-import, 6 the target table cannot take the data, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
import threading
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from antioom.api import default_db, import_csv
from antioom.engine.pipeline import DEFAULT_BATCH_SIZE
from antioom.engine.progress import Heartbeat, ProgressEvent, Summary, peak_rss_mb
from antioom.engine.records import Dialect
from antioom.engine.rejects import RejectsWriter, keep_through
from antioom.errors import AntioomError, ConfigError, InputError
from antioom.workers.jobs import DEFAULT_PARTS

DB_HELP = (
    "Database URL: sqlite:///, postgresql://, mysql://, mongodb://. "
    "\\[default: sqlite:///antioom.db]"
)
FLAG = ""  # the metavar of boolean flags: shown as flags, not as options taking a <bool>


class _FlagsAsFlags:
    """Help that shows boolean flags (``--json``, ``-h``) as flags, without a ``<bool>``."""

    params: list[Any]

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and not getattr(param, "count", False):
                param.metavar = FLAG
        return params


class _Command(_FlagsAsFlags, TyperCommand):
    """A command whose help shows flags as flags."""


class _Group(_FlagsAsFlags, TyperGroup):
    """The command group, likewise."""


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    help="Stream CSV files of any size into databases in flat memory.",
    epilog="Run [bold]antioom COMMAND -h[/] for a command's options, examples and exit codes.",
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``100MB``, ``1.5GiB``, ``4096`` → bytes (K/M/G/T are powers of 1024)."""
    match = SIZE.match(text)
    if not match:
        raise ConfigError(f"invalid size {text!r}: use e.g. 100MB, 1GB, 65536")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * UNITS[unit])


def fail(error: BaseException) -> NoReturn:
    """Print a one-line error and exit with the error's code; never a traceback."""
    if isinstance(error, AntioomError):
        typer.echo(f"antioom: error: {error}", err=True)
        raise typer.Exit(error.exit_code)
    if isinstance(error, KeyboardInterrupt):
        typer.echo("antioom: interrupted", err=True)
        raise typer.Exit(130)
    if os.environ.get("ANTIOOM_DEBUG"):
        raise error
    typer.echo(
        f"antioom: internal error: {type(error).__name__}: {error} "
        "(set ANTIOOM_DEBUG=1 for a traceback)",
        err=True,
    )
    raise typer.Exit(1)


def _epilog(examples: list[tuple[str, str]], exit_codes: list[tuple[int, str]]) -> str:
    """A command's help epilog (rich markup): examples, then exit codes."""
    from rich.markup import escape

    lines = ["[bold]Examples[/]"]
    for command, what in examples:
        lines.append(
            f"  [cyan]{escape(command)}[/]" + (f"  [dim]# {escape(what)}[/]" if what else "")
        )
    lines += ["", "[bold]Exit codes[/]"]
    lines += [f"  {code:>3}  {escape(meaning)}" for code, meaning in exit_codes]
    return "\n".join(lines)


IMPORT_EPILOG = _epilog(
    [
        ("antioom import products.csv --dataset products", "the seed's schema, upsert by sku"),
        ("antioom import export.csv.gz --db postgresql://localhost/shop --table orders", ""),
        ("antioom import - --table events --delimiter ';' < events.csv", "standard input"),
        ("antioom import big.csv --dataset products --rejects rejects.csv --json", ""),
        ("antioom import big.csv --dataset products --resume", "after a crash or Ctrl-C"),
    ],
    [
        (0, "completed (rows may have been rejected: see the summary)"),
        (1, "internal error (ANTIOOM_DEBUG=1 shows the traceback)"),
        (2, "invalid options, dataset file or database URL"),
        (3, "invalid input (unreadable, corrupt, not in the encoding, record too large)"),
        (4, "the database cannot be reached (nothing was read)"),
        (5, "the database failed mid-import (committed batches stay)"),
        (6, "the target table cannot take the data (nothing was written)"),
        (130, "interrupted (the command to resume is printed)"),
    ],
)
GENERATE_EPILOG = _epilog(
    [
        ("antioom generate products.csv --size 100MB", "the seed's products file"),
        ("antioom generate bad.csv.gz --rows 100000 --invalid-ratio 0.01 --seed 7", ""),
    ],
    [(0, "written"), (2, "invalid options"), (3, "the output cannot be written")],
)
SERVE_EPILOG = _epilog(
    [
        ("antioom serve", "http://127.0.0.1:8000/ on sqlite:///antioom.db"),
        ("antioom serve --port 8080 --db postgresql://localhost/shop", ""),
        ("ANTIOOM_API_KEYS=secret antioom serve --host 0.0.0.0", "keyed mode"),
    ],
    [
        (0, "stopped (Ctrl-C)"),
        (1, "internal error"),
        (2, "invalid settings (a non-loopback --host needs ANTIOOM_API_KEYS)"),
    ],
)
WORKER_EPILOG = _epilog(
    [
        ("antioom worker", "on the local RabbitMQ (amqp://guest:guest@127.0.0.1:5672//)"),
        ("antioom worker --broker redis://127.0.0.1:6379/0 --concurrency 2", ""),
    ],
    [(0, "stopped (Ctrl-C)"), (1, "internal error"), (2, "invalid settings")],
)
UPLOAD_EPILOG = _epilog(
    [
        ("antioom upload products.csv --url http://127.0.0.1:8000", "the products dataset"),
        (
            "antioom upload export.csv --url http://127.0.0.1:8000 --table orders "
            "--delimiter ';' --encoding cp1252 --type zip=string",
            "",
        ),
        ("antioom upload big.csv.gz --url https://antioom.example --token KEY", ""),
    ],
    [
        (0, "done (rows may have been rejected: see the summary)"),
        (1, "the import failed or was aborted"),
        (2, "the server refused the request (4xx; its reason is printed), or invalid options"),
        (3, "the local file cannot be read"),
        (4, "the server is unreachable or unavailable (503)"),
    ],
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"antioom {version('antioom')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Stream CSV files of any size into databases in flat memory."""


# Options that antioom import and antioom upload share: one declaration, one help text.
DelimiterOption = Annotated[
    str | None,
    typer.Option(help="Field delimiter; \\t for tab. \\[default: detected among , | ; tab]"),
]
QuoteOption = Annotated[
    str | None,
    typer.Option(help="Quote character; empty for none. \\[default: detected, \" or ']"),
]
EscapeOption = Annotated[
    str | None,
    typer.Option(help="Escape character; empty for none. \\[default: detected, none or \\]"),
]
EncodingOption = Annotated[
    str | None,
    typer.Option(help="Text encoding (any Python codec). \\[default: from a BOM, else UTF-8]"),
]
HeaderOption = Annotated[
    bool | None,
    typer.Option(
        "--header/--no-header",
        help="Whether the first record is a header. \\[default: detected]",
    ),
]
ColumnsOption = Annotated[
    str | None,
    typer.Option(help="Column names, comma-separated (a header row is then skipped)."),
]
SkipOption = Annotated[
    int | None,
    typer.Option(help="Skip this many lines first. \\[default: a preamble is detected]"),
]
CommentOption = Annotated[
    str | None, typer.Option(help="Drop lines starting with this character, e.g. #.")
]
NullOption = Annotated[
    str | None,
    typer.Option(help="Values read as NULL, comma-separated, e.g. NULL,\\N,NA (besides empty)."),
]
TypesOption = Annotated[
    list[str] | None,
    typer.Option("--type", help="With --table: force a column's type, NAME=TYPE (repeatable)."),
]
NoInferOption = Annotated[
    bool, typer.Option("--no-infer", help="With --table: every column is text.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
StagingOption = Annotated[
    str | None,
    typer.Option(
        envvar="ANTIOOM_STAGING_URL",
        help="Where queued uploads are staged: file:///shared/dir or s3://bucket/prefix "
        "(endpoint and credentials from the AWS_* variables).",
    ),
]
BrokerOption = Annotated[
    str | None,
    typer.Option(
        envvar="ANTIOOM_BROKER_URL",
        help="The Celery broker of the workers. \\[default: amqp://guest:guest@127.0.0.1:5672//]",
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


@app.command("import", cls=_Command, epilog=IMPORT_EPILOG)
def import_command(
    path: Annotated[str, typer.Argument(help="CSV file (plain, .gz or .zst), or - for stdin.")],
    db: Annotated[
        str | None,
        typer.Option(envvar="ANTIOOM_DB_URL", help=DB_HELP),
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Declared dataset to import into.")] = None,
    table: Annotated[
        str | None, typer.Option(help="Import into this table; columns inferred from the file.")
    ] = None,
    datasets: Annotated[
        Path | None,
        typer.Option(envvar="ANTIOOM_DATASETS", help="TOML file declaring datasets."),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="insert or upsert. \\[default: the dataset's mode]")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Key columns, comma-separated.")] = None,
    delimiter: DelimiterOption = None,
    quote: QuoteOption = None,
    escape: EscapeOption = None,
    sniff: Annotated[
        bool, typer.Option("--sniff", hidden=True, help="Kept for old scripts: always on.")
    ] = False,
    encoding: EncodingOption = None,
    header: HeaderOption = None,
    columns: ColumnsOption = None,
    skip: SkipOption = None,
    comment: CommentOption = None,
    null: NullOption = None,
    types: TypesOption = None,
    no_infer: NoInferOption = False,
    batch_size: Annotated[int, typer.Option(help="Rows per batch/transaction.")] = (
        DEFAULT_BATCH_SIZE
    ),
    max_record_bytes: Annotated[
        str, typer.Option(help="Largest record accepted (CSV-bomb protection).")
    ] = "1MiB",
    max_columns: Annotated[int, typer.Option(help="Most columns accepted.")] = 10_000,
    rejects: Annotated[
        Path | None, typer.Option(help="Write rejected rows (with reasons) to this CSV file.")
    ] = None,
    import_id: Annotated[
        str | None,
        typer.Option(
            help="Name the import; an interrupted one is resumed (only rows not yet "
            "committed are written). \\[default: a new random id]"
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Resume the last unfinished import of this file into this target "
            "(found in the database); a new import if there is none.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Read and validate everything, write nothing: the counts and rejects of the "
            "file (keys already in the table are not checked; no database needed).",
        ),
    ] = False,
    max_rejects: Annotated[
        int | None,
        typer.Option(
            help="Stop with exit code 7 once more rows than this are rejected (batches "
            "committed before stay). \\[default: no limit]"
        ),
    ] = None,
    stop_on_error: Annotated[
        bool, typer.Option("--stop-on-error", help="Stop at the first rejected row (exit 7).")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Import the first N records only. \\[default: all]")
    ] = None,
    drop: Annotated[
        bool, typer.Option("--drop", help="Drop the table first (it is created anew).")
    ] = False,
    truncate: Annotated[
        bool, typer.Option("--truncate", help="Delete the table's rows first.")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Rows whose key exists replace them: the same as --mode upsert."
        ),
    ] = False,
    alter: Annotated[
        bool,
        typer.Option("--alter", help="Add the columns an existing table lacks (nullable)."),
    ] = False,
    renames: Annotated[
        list[str] | None,
        typer.Option(
            "--rename",
            help="With --table: name a column, HEADER=COLUMN (repeatable), e.g. "
            "'Unit Price=price'.",
        ),
    ] = None,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="Stage the file (--staging) and queue its import for the workers "
            "(antioom worker); prints the queued record and returns.",
        ),
    ] = False,
    staging: StagingOption = None,
    broker: BrokerOption = None,
    parts: Annotated[
        int,
        typer.Option(
            help="With --queue: split an insert without a key into N parts (16-256 MiB each: "
            "fewer for a small file, more for a big one)."
        ),
    ] = DEFAULT_PARTS,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Write with N connections side by side: an insert without a key in up to "
            "N parts of a local file, an upsert or keyed insert with its keys partitioned "
            "among N writers (PostgreSQL). Not SQLite.",
        ),
    ] = 1,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Import a CSV file into a database, streaming, in flat memory.

    Every import is recorded in the database (antioom_imports) and its batches in a ledger
    (antioom_batches): after a crash, Ctrl-C or a lost connection, run the same command with
    --resume (or --import-id ID) to write exactly the rows not yet committed.
    """
    try:
        if mode not in (None, "insert", "upsert"):
            raise ConfigError(f"invalid mode {mode!r}: use insert or upsert")
        if replace:
            if mode == "insert":
                raise ConfigError("--replace is --mode upsert: not with --mode insert")
            mode = "upsert"
        if drop and truncate:
            raise ConfigError("give --drop or --truncate, not both")
        if stop_on_error:
            max_rejects = 0
        if dataset is None and table is None:
            raise ConfigError(
                "choose a dataset or a table to import into: add --dataset NAME (built in: "
                "--dataset products) or --table NAME"
            )
        dialect = Dialect(
            delimiter=_unescape(delimiter),
            quote_char=quote,
            escape_char=_unescape(escape),
            header=header,
            columns=_names(columns),
            encoding=encoding,
            skip_lines=skip,
            comment=comment,
            null_values=tuple(null.split(",")) if null is not None else (),
            max_record_bytes=parse_size(max_record_bytes),
            max_columns=max_columns,
        )
        mode_value: Literal["insert", "upsert"] | None = mode  # type: ignore[assignment]
        if queue:
            unsupported = [
                flag
                for flag, given in (
                    ("--rejects", rejects),
                    ("--resume", resume),
                    ("--dry-run", dry_run),
                    ("--drop", drop),
                    ("--truncate", truncate),
                )
                if given
            ]
            if unsupported:
                raise ConfigError(f"--queue cannot be combined with {', '.join(unsupported)}")
            if not staging:
                raise ConfigError("--queue needs --staging URL (or ANTIOOM_STAGING_URL)")
            if workers > 1:
                raise ConfigError("--workers is for a local import: a queued one takes --parts")
            _queue(
                path,
                as_json=as_json,
                broker=broker,
                db=db or default_db(),
                staging=staging,
                parts=parts,
                import_id=import_id,
                dataset=dataset,
                table=table,
                datasets_file=datasets,
                mode=mode_value,
                key=_names(key),
                dialect=dialect,
                types=_type_overrides(types),
                infer=not no_infer,
                batch_size=batch_size,
                max_rejects=max_rejects,
                limit=limit,
                alter=alter,
                renames=_pairs(renames, "--rename", "HEADER=COLUMN"),
            )
            return
        if workers > 1 and rejects is not None:
            raise ConfigError(
                "--rejects writes one file in record order: it takes one writer (--workers 1)"
            )
        summary = _run_import(
            path,
            db=db or default_db(),
            dataset=dataset,
            table=table,
            datasets=datasets,
            mode=mode_value,
            key=_names(key),
            dialect=dialect,
            types=_type_overrides(types),
            infer=not no_infer,
            batch_size=batch_size,
            rejects=rejects,
            quiet=quiet or as_json,
            import_id=import_id,
            resume=resume,
            dry_run=dry_run,
            max_rejects=max_rejects,
            limit=limit,
            reset="drop" if drop else "truncate" if truncate else None,
            alter=alter,
            renames=_pairs(renames, "--rename", "HEADER=COLUMN"),
            workers=workers,
        )
    except Interrupted as error:
        typer.echo(f"antioom: {error}", err=True)
        typer.echo(f"resume with: {_resume_command(error.import_id)}", err=True)
        raise typer.Exit(error.exit_code) from None
    except (AntioomError, KeyboardInterrupt) as error:
        fail(error)
    except Exception as error:
        fail(error)
    if as_json:
        data = summary.to_dict()
        typer.echo(json.dumps(data))
    else:
        _print_summary(summary, rejects)


def _queue(path: str, *, as_json: bool, broker: str | None, **options: Any) -> None:
    from antioom.api import queue_csv
    from antioom.workers.tasks import configure

    configure(broker)
    summary = queue_csv(path, **options)
    if as_json:
        typer.echo(json.dumps(summary.to_dict()))
    else:
        typer.echo(
            f"queued import {summary.import_id} ({summary.bytes:,} bytes staged); "
            "antioom worker imports it, and its record follows it"
        )


def _unescape(text: str | None) -> str | None:
    """``\\t`` as typed in a shell → a tab."""
    return "\t" if text == "\\t" else text


def _type_overrides(specs: list[str] | None) -> dict[str, str] | None:
    """``["price=decimal", "zip=string"]`` → ``{"price": "decimal", "zip": "string"}``."""
    return _pairs(specs, "--type", "NAME=TYPE, e.g. zip=string")


def _pairs(specs: list[str] | None, option: str, form: str) -> dict[str, str] | None:
    """``["a=b", "c=d"]`` → ``{"a": "b", "c": "d"}``; ConfigError naming ``option``."""
    if not specs:
        return None
    pairs = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"invalid {option} {spec!r}: use {form}")
        pairs[name.strip()] = value.strip()
    return pairs


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ConfigError("expected comma-separated names")
    return names


class Interrupted(AntioomError):
    """An import that stopped part-way with rows committed: it can be resumed."""

    def __init__(self, message: str, import_id: str, exit_code: int) -> None:
        super().__init__(message)
        self.import_id = import_id
        self.exit_code = exit_code


def _run_import(
    path: str,
    *,
    rejects: Path | None,
    quiet: bool,
    import_id: str | None,
    resume: bool,
    **options: Any,
) -> Summary:
    from antioom.history import open_store

    db = options.pop("db")
    earlier: int | None = None
    if options.get("dry_run"):  # no database: nothing to resume, nothing recorded
        if resume or import_id:
            raise ConfigError("--dry-run writes nothing: it cannot resume an import")
        import_id = uuid.uuid4().hex
    else:
        store = open_store(db)
        try:
            import_id, earlier = _import_id(store, path, import_id, resume, options)
        finally:
            store.close()
    cancel = threading.Event()
    with ExitStack() as stack:
        on_reject = flush_rejects = None
        if rejects is not None:
            out = stack.enter_context(_open_rejects(rejects, earlier))
            writer = RejectsWriter(out, header=earlier is None or out.tell() == 0)
            on_reject, flush_rejects = writer.write, writer.flush
        on_progress = None if quiet else stack.enter_context(ProgressDisplay(path))
        try:
            summary = import_csv(
                path,
                db,
                datasets_file=options.pop("datasets"),
                on_progress=on_progress,
                on_reject=on_reject,
                flush_rejects=flush_rejects,
                refused_before_commit=True,  # a file: durable before the batch commits
                cancel=cancel,
                import_id=import_id,
                **options,
            )
        except KeyboardInterrupt:
            cancel.set()
            committed = _committed_rows(db, import_id)
            shown = "" if committed is None else f": {committed:,} rows committed"
            raise Interrupted(f"interrupted{shown}", import_id, 130) from None
        except AntioomError as error:
            ended: Summary | None = getattr(error, "summary", None)
            if ended is not None and ended.batches and not isinstance(error, ConfigError):
                message = f"error: {error} ({ended.processed:,} rows committed)"
                raise Interrupted(message, import_id, error.exit_code) from None
            raise
        # The process's own high-water mark: the engine samples only at batch ends.
        summary.peak_rss_mb = max(summary.peak_rss_mb, peak_rss_mb() or 0.0)
        return summary


def _import_id(
    store: Any, path: str, import_id: str | None, resume: bool, options: dict[str, Any]
) -> tuple[str, int | None]:
    """The import id to run, and for a resumed import the last record its ledger holds."""
    from antioom.api import resolve_dataset
    from antioom.history import check_can_run, resumable, source_key

    if resume and import_id is None:
        key = source_key(path)
        if key is None:
            raise ConfigError("--resume needs a file path (stdin has no identity): use --import-id")
        table = options.get("table")
        if table is None:
            if options.get("dataset") is None:
                raise ConfigError("choose a dataset (--dataset NAME) or a table (--table NAME)")
            table = resolve_dataset(options["dataset"], options.get("datasets")).table
        import_id = resumable(store, key, table)
    if import_id is None:
        return uuid.uuid4().hex, None
    # Refused here, before the rejects file is opened (and cut): an id that completed, runs
    # in another process or was of other data must leave that import's rejects file alone.
    check_can_run(store, import_id, source_key(path))
    committed = store.committed(import_id)
    return import_id, committed.end_record if committed.batches else None


def _committed_rows(db: str, import_id: str) -> int | None:
    """Rows the ledger holds for ``import_id``, or None if the database cannot tell."""
    from antioom.history import open_store

    try:
        store = open_store(db)
        try:
            return store.committed(import_id).committed_rows
        finally:
            store.close()
    except AntioomError:
        return None


def _open_rejects(path: Path, resumed_after: int | None) -> Any:
    """The rejects file: new, or for a resumed import the earlier run's file cut after the last
    committed record (rejects past it are reported again)."""
    try:
        if resumed_after is not None and path.exists():
            keep_through(path, resumed_after)
            return open(path, "a", newline="", encoding="utf-8")
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write rejects file {path}: {exc.strerror}") from None


def _resume_command(import_id: str) -> str:
    """This command line, with ``--import-id ID`` in place of ``--resume``/``--import-id``."""
    args: list[str] = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--import-id":
            skip = True
        elif arg != "--resume" and not arg.startswith("--import-id="):
            args.append(arg)
    return shlex.join(["antioom", *args, "--import-id", import_id])


def _file_size(path: str) -> int | None:
    """The size of a regular file, or None (stdin, pipes): the progress bar's total."""
    return None if path == "-" or not os.path.isfile(path) else os.path.getsize(path)


def _byte_progress(*fields: str) -> Any:
    """A rich progress bar of bytes on stderr, with extra text columns (task fields)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        *(TextColumn(field) for field in fields),
        _eta_column(),
        console=Console(stderr=True),
    )


def _eta_column() -> Any:
    """A rich column ``ETA 0:01:23``; empty while the total is unknown (stdin)."""
    from rich.progress import Task, TimeRemainingColumn
    from rich.text import Text

    class EtaColumn(TimeRemainingColumn):
        def render(self, task: Task) -> Text:
            if task.total is None:
                return Text("")
            return Text.assemble(("ETA ", "progress.remaining"), super().render(task))

    return EtaColumn()


class ProgressDisplay:
    """A rich progress bar on a terminal; the seed's heartbeat log lines otherwise."""

    def __init__(self, path: str) -> None:
        self._total = _file_size(path)
        self._bar: Any = None
        self._task: Any = None
        self._heartbeat: Heartbeat | None = None

    def __enter__(self) -> ProgressDisplay:
        if sys.stderr.isatty():
            self._bar = _byte_progress(
                "{task.fields[rows]:,} rows, {task.fields[failed]:,} rejected",
                "RSS {task.fields[rss]:,} MB",
            )
            self._bar.start()
            self._task = self._bar.add_task("importing", total=self._total, rows=0, failed=0, rss=0)
        else:
            logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
            self._heartbeat = Heartbeat()
        return self

    def __call__(self, event: ProgressEvent) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=event.bytes,
                rows=event.processed,
                failed=event.failed,
                rss=round(event.rss_mb),
            )
        elif self._heartbeat is not None:
            self._heartbeat(event)

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _print_summary(summary: Summary, rejects: Path | None) -> None:
    outcome = f"{summary.status}: {summary.processed:,} rows written to"
    if summary.dry_run:
        outcome = f"dry run {summary.status}: {summary.processed:,} rows would be written to"
    typer.echo(
        f"{outcome} {summary.table}, "
        f"{summary.failed:,} rejected, {summary.rows:,} read ({summary.bytes:,} bytes) in "
        f"{summary.duration_s:.2f}s ({summary.rows_per_s:,.0f} rows/s, peak RSS "
        f"{summary.peak_rss_mb:.0f} MB)"
    )
    if summary.resumed_from:
        earlier = summary.resumed_from
        typer.echo(
            f"resumed import {summary.import_id}: records 1-{earlier['records']:,} were "
            f"committed earlier ({earlier['rows']:,} rows, {earlier['rejected']:,} rejected) "
            "and skipped"
        )
    if summary.dialect:
        typer.echo(f"read as: {describe_dialect(summary.dialect)}")
    for note in summary.notes:
        typer.echo(f"note: {note}")
    if summary.failed:
        _print_rejects_by_reason(summary.rejects_by_reason, summary.failed)
        where = f"all in {rejects}" if rejects else "use --rejects FILE for all of them"
        typer.echo(f"first rejected rows ({where}):")
        for reject in summary.rejects[:5]:
            column = f" [{reject.column}]" if reject.column else ""
            typer.echo(f"  record {reject.record:,}{column}: {reject.reason}")


def _print_rejects_by_reason(counts: dict[str, int], failed: int) -> None:
    """The table of rejected rows per reason, largest first; rows rejected by earlier runs of
    a resumed import (not counted again) as one line."""
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    earlier = failed - sum(counts.values())
    if earlier > 0:
        rows.append(("(earlier runs of this import)", earlier))
    if not rows:
        return
    width = max(len(f"{count:,}") for _, count in rows)
    typer.echo("rejected rows by reason:")
    for reason, count in rows:
        typer.echo(f"  {count:>{width},}  {reason}")


def describe_dialect(report: dict[str, Any]) -> str:
    """``delimiter ';' (detected), quote '"', no escape, header, encoding utf-8``."""
    detected = set(report.get("detected", ()))

    def shown(name: str, text: str) -> str:
        return f"{text} (detected)" if name in detected else text

    def char(value: str | None) -> str:
        return repr("\\t" if value == "\t" else value).replace("\\\\", "\\")

    parts = [
        shown("delimiter", f"delimiter {char(report['delimiter'])}"),
        shown("quote", f"quote {char(report['quote'])}" if report["quote"] else "no quoting"),
        shown("escape", f"escape {char(report['escape'])}" if report["escape"] else "no escape"),
        shown("header", "header" if report["header"] else "no header"),
    ]
    if report.get("skipped_lines"):
        parts.append(shown("preamble", f"{report['skipped_lines']} line(s) skipped"))
    parts.append(shown("encoding", f"encoding {report['encoding']}"))
    return ", ".join(parts)


@app.command(cls=_Command, epilog=GENERATE_EPILOG)
def generate(
    out: Annotated[str, typer.Argument(help="Output file (.gz/.zst compress), or - for stdout.")],
    size: Annotated[str | None, typer.Option(help="Target size, e.g. 100MB.")] = None,
    rows: Annotated[int | None, typer.Option(help="Number of data rows.")] = None,
    invalid_ratio: Annotated[
        float, typer.Option(help="Share of rows that break the products rules.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 0,
) -> None:
    """Generate a products CSV (sku,name,price) like the seed's, fast."""
    from antioom.generate import generate_products, open_output

    try:
        if (size is None) == (rows is None):
            raise ConfigError("give exactly one of --size or --rows")
        if not 0.0 <= invalid_ratio <= 1.0:
            raise ConfigError("--invalid-ratio must be between 0 and 1")
        try:
            handle = open_output(out)
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror}") from None
        with handle:
            stats = generate_products(
                handle,
                rows=rows,
                size_bytes=None if size is None else parse_size(size),
                invalid_ratio=invalid_ratio,
                seed=seed,
            )
    except Exception as error:
        fail(error)
    if out != "-":
        typer.echo(
            f"wrote {out}: {stats.rows:,} rows ({stats.invalid_rows:,} invalid), "
            f"{stats.bytes:,} bytes",
            err=True,
        )


@app.command(cls=_Command, epilog=SERVE_EPILOG)
def serve(
    host: Annotated[
        str,
        typer.Option(
            envvar="ANTIOOM_HOST",
            help="Address to bind (anything but loopback needs ANTIOOM_API_KEYS).",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="ANTIOOM_PORT", help="Port to bind.")] = 8000,
    db: Annotated[
        str | None,
        typer.Option(envvar="ANTIOOM_DB_URL", help=DB_HELP),
    ] = None,
    datasets: Annotated[
        str | None, typer.Option(envvar="ANTIOOM_DATASETS", help="TOML file declaring datasets.")
    ] = None,
    staging: StagingOption = None,
    broker: BrokerOption = None,
) -> None:
    """Run the HTTP service (streamed uploads, live progress, dashboard at /).

    With --staging, uploads are staged there and queued for the workers (antioom worker),
    and the upload answers 202 with the queued record.
    """
    try:
        import uvicorn

        from antioom.server import Settings, create_app
        from antioom.server.guards import RedactTokens, proxy_addresses

        overrides: dict[str, Any] = {}
        if db:
            overrides["db_url"] = db
        if datasets:
            overrides["datasets"] = datasets
        if staging:
            overrides["staging_url"] = staging
        if broker:
            overrides["broker_url"] = broker
        settings = Settings(**overrides)
        if not settings.keys and not _is_loopback(host):
            raise ConfigError(
                f"refusing to serve on {host} without an API key: anyone on the network could "
                "write to your database. Set ANTIOOM_API_KEYS (or API_KEY), or bind 127.0.0.1"
            )
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: a local client could
        # then pick its own address and dodge the rate limits. Only configured proxies count.
        proxies = proxy_addresses(settings.trusted_proxies)
        application = create_app(settings)
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        logging.getLogger("uvicorn.access").addFilter(RedactTokens())
        typer.echo(f"anti-oom dashboard: http://{host}:{port}/  (API docs: /docs)", err=True)
        uvicorn.run(
            application,
            host=host,
            port=port,
            log_level="info",
            proxy_headers=bool(proxies),
            forwarded_allow_ips=proxies,
            # h11, not httptools: httptools accepts request heads of any size
            http="h11",
            h11_max_incomplete_event_size=settings.max_header_bytes,
        )
    except Exception as error:
        fail(error)


@app.command(cls=_Command, epilog=WORKER_EPILOG)
def worker(
    broker: BrokerOption = None,
    concurrency: Annotated[
        int, typer.Option(help="Parts this worker imports at once (threads).")
    ] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery's log level.")] = "INFO",
) -> None:
    """Run a worker that imports queued uploads (antioom serve --staging, import --queue).

    Start as many as you like, on any machine that reaches the broker, the staging storage
    and the databases. A worker killed mid-part is safe: the broker gives its part to another
    worker, which skips the batches the ledger holds.
    """
    try:
        from antioom.workers.tasks import run_worker

        run_worker(broker, concurrency, loglevel)
    except Exception as error:
        fail(error)


@app.command(cls=_Command, epilog=UPLOAD_EPILOG)
def upload(
    path: Annotated[
        str, typer.Argument(help="CSV file (.gz/.zst are sent as they are), or - for stdin.")
    ],
    url: Annotated[str, typer.Option(help="The server's base URL, e.g. http://127.0.0.1:8000.")],
    token: Annotated[
        str | None, typer.Option(envvar="ANTIOOM_TOKEN", help="API key (Bearer token).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Declared dataset on the server to import into. \\[default: products, as "
            "POST /upload, unless --table is given]"
        ),
    ] = None,
    table: Annotated[
        str | None, typer.Option(help="Import into this table; columns inferred from the file.")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="insert or upsert. \\[default: the dataset's mode]")
    ] = None,
    compress: Annotated[
        bool, typer.Option("--gzip", help="Compress on the fly (gzip) while sending.")
    ] = False,
    import_id: Annotated[
        str | None,
        typer.Option(
            help="Import ID; sending the file again under the ID of an interrupted import "
            "resumes it. \\[default: a random one]"
        ),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            help="Send the file again (same import ID, back-off 1, 2, 4… s) this many times "
            "when the connection breaks or the server is unavailable; the server skips what "
            "it committed. Not for stdin."
        ),
    ] = 3,
    delimiter: DelimiterOption = None,
    quote: QuoteOption = None,
    escape: EscapeOption = None,
    encoding: EncodingOption = None,
    header: HeaderOption = None,
    columns: ColumnsOption = None,
    skip: SkipOption = None,
    comment: CommentOption = None,
    null: NullOption = None,
    types: TypesOption = None,
    no_infer: NoInferOption = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Stream a CSV file to an anti-oom server and print the import's summary.

    The CSV options are those of antioom import; the server detects those not given.
    """
    from antioom.client import csv_params, upload_file

    try:
        overrides = _type_overrides(types)
        if table is None and (overrides or no_infer):
            raise ConfigError("--type and --no-infer apply to --table imports")
        params = csv_params(
            delimiter=_unescape(delimiter),
            quote=quote,
            escape=_unescape(escape),
            encoding=encoding,
            header=header,
            columns=_names(columns),
            skip=skip,
            comment=comment,
            null=null.split(",") if null is not None else None,
            types=overrides,
            infer=not no_infer,
        )
        with ExitStack() as stack:
            on_progress = None
            if not (quiet or as_json):
                on_progress = stack.enter_context(UploadProgress(path))
            record = upload_file(
                path,
                url,
                token=token,
                dataset=dataset,
                table=table,
                mode=mode,
                compress=compress,
                import_id=import_id,
                params=params,
                on_progress=on_progress,
                retries=retries,
                on_retry=_say_retry,
            )
    except (AntioomError, KeyboardInterrupt) as error:
        fail(error)
    except Exception as error:
        fail(error)
    if as_json:
        typer.echo(json.dumps(record))
    else:
        _print_upload_summary(record, url)


def _say_retry(attempt: int, delay_s: float, reason: str) -> None:
    typer.echo(f"antioom: {reason}; retry {attempt} in {delay_s:g}s", err=True)


class UploadProgress:
    """Bytes sent: a rich progress bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, path: str) -> None:
        self._total = _file_size(path)
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> UploadProgress:
        if sys.stderr.isatty():
            self._bar = _byte_progress()
            self._bar.start()
            self._task = self._bar.add_task("uploading", total=self._total)
        return self

    def __call__(self, sent: int) -> None:
        if self._bar is not None:
            done = sent == self._total
            self._bar.update(
                self._task,
                completed=sent,
                description="sent, the server is committing" if done else "uploading",
            )
            return
        import time

        now = time.monotonic()
        if now - self._last >= 5.0 or sent == self._total:
            self._last = now
            share = f" of {self._total / (1 << 20):.1f} MiB" if self._total else ""
            percent = f" ({100 * sent / self._total:.0f}%)" if self._total else ""
            typer.echo(f"[Upload] sent {sent / (1 << 20):.1f} MiB{share}{percent}", err=True)

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _print_upload_summary(record: dict[str, Any], url: str) -> None:
    typer.echo(
        f"{record.get('status')}: {record.get('processed') or 0:,} rows written to "
        f"{record.get('table') or record.get('dataset')}, {record.get('failed') or 0:,} "
        f"rejected, {record.get('rows') or 0:,} read ({record.get('bytes') or 0:,} bytes) in "
        f"{float(record.get('duration_s') or 0):.2f}s "
        f"({float(record.get('rows_per_s') or 0):,.0f} rows/s, peak server RSS "
        f"{float(record.get('peak_rss_mb') or 0):.0f} MB)"
    )
    if record.get("dialect"):
        typer.echo(f"read as: {describe_dialect(record['dialect'])}")
    for note in record.get("notes") or ():
        typer.echo(f"note: {note}")
    typer.echo(f"import {record.get('id')}")
    by_reason = record.get("rejects_by_reason")
    if record.get("failed") and isinstance(by_reason, dict):
        _print_rejects_by_reason(by_reason, int(record["failed"]))
    if record.get("failed") and record.get("rejects_url"):
        base = url.rstrip("/").removesuffix("/imports")
        typer.echo(f"rejected rows: {base}{record['rejects_url']}")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    """Console entry point. Ends with ``os._exit`` once output is flushed: after a failed
    import, Arrow's read-ahead thread may still be about to call into Python, and doing so
    while the interpreter finalises aborts the process (SIGABRT) after the error was shown."""
    try:
        app()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
