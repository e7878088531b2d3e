"""Real-world CSV dialects: what is detected, what is reported, and what lands, exactly.

Each case imports a small file written here (messy on purpose) into a real SQLite database
with ``--table`` and reads back the stored values. The first section is one regression test
per defect found on real files; then detection (delimiter, quote, escape, preamble, header,
encoding), the explicit options that override it, and a property test over random dialects.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import assert_one_line_error

from antioom import InputError, Summary, import_csv
from antioom.engine.records import Dialect
from antioom.sinks.sqlite_connection import connect as connect_sqlite

Rows = list[tuple[Any, ...]]


@pytest.fixture
def load(
    write_csv: Callable[..., Path],
    sqlite_url: str,
    fetch: Callable[..., Rows],
    call_with_deadline: Callable[..., Any],
) -> Callable[..., tuple[Summary, Rows]]:
    """``load(content, **import_csv_kwargs)`` → (summary, rows of table ``t`` in file order)."""

    def load(content: bytes | str, **kwargs: Any) -> tuple[Summary, Rows]:
        kwargs.setdefault("table", "t")
        summary = call_with_deadline(10, import_csv, write_csv(content), sqlite_url, **kwargs)
        return summary, fetch(sqlite_url, f"SELECT * FROM {kwargs['table']} ORDER BY rowid")

    return load


def columns_of(fetch: Callable[..., Rows], url: str, table: str = "t") -> list[tuple[str, str]]:
    return [(row[1], row[2]) for row in fetch(url, f"PRAGMA table_info({table})")]


# --------------------------------------------------------------------------- defects found


def test_blank_header_name_gets_a_name_and_values_stay_in_their_columns(load, sqlite_url, fetch):
    summary, rows = load("id,,name\n1,x,alice\n")
    assert rows == [(1, "x", "alice")]
    assert [name for name, _ in columns_of(fetch, sqlite_url)] == ["id", "column2", "name"]
    assert any("column2" in note for note in summary.notes)


def test_duplicate_header_names_are_renamed_and_reported(load, sqlite_url, fetch):
    summary, rows = load("a,b,a,A\n1,2,3,4\n")
    assert rows == [(1, 2, 3, 4)]
    assert [name for name, _ in columns_of(fetch, sqlite_url)] == ["a", "b", "a_1", "a_2"]
    assert any("a_1" in note for note in summary.notes)


def test_dataset_still_refuses_a_duplicated_dataset_column(write_csv, sqlite_url):
    with pytest.raises(InputError, match="more than once"):
        import_csv(write_csv("sku,name,price,sku\nA,n,1,B\n"), sqlite_url, dataset="products")


def test_leading_zeros_keep_a_column_text(load, sqlite_url, fetch):
    _, rows = load("zip,code,n,ratio\n08123,0000,0,0.5\n10115,0042,7,1.25\n")
    assert rows == [("08123", "0000", 0, 0.5), ("10115", "0042", 7, 1.25)]
    assert [kind for _, kind in columns_of(fetch, sqlite_url)] == [
        "TEXT",
        "TEXT",
        "INTEGER",
        "REAL",
    ]


def test_leading_zero_after_the_sample_is_rejected_not_altered(load):
    first_block = "".join(f"{i}\n" for i in range(500, 900))  # inferred: integer
    summary, rows = load("n\n" + first_block + "0042\n", dialect=Dialect(max_record_bytes=1024))
    assert rows == [(i,) for i in range(500, 900)]
    (reject,) = summary.rejects
    assert (reject.record, reject.column) == (401, "n")
    assert "leading zero" in reject.reason and "--type n=string" in reject.reason


def test_integers_too_big_for_64_bits_stay_exact_text(load):
    _, rows = load("id\n12345678901234567890\n98765432109876543210\n")
    assert rows == [("12345678901234567890",), ("98765432109876543210",)]


def test_blank_lines_are_null_rows_in_a_one_column_file(load):
    summary, rows = load("name\nann\n\nbob\n")
    assert rows == [("ann",), (None,), ("bob",)]
    assert (summary.rows, summary.processed) == (3, 3)


def test_blank_lines_are_skipped_in_a_multi_column_file(load):
    _, rows = load("name,city\nann,paris\n\n\r\nbob,rome\n")
    assert rows == [("ann", "paris"), ("bob", "rome")]


def test_header_without_trailing_newline_is_zero_rows(load, sqlite_url, fetch):
    summary, rows = load("a,b")
    assert (summary.status, summary.rows, rows) == ("completed", 0, [])
    assert [name for name, _ in columns_of(fetch, sqlite_url)] == ["a", "b"]


def test_last_record_without_trailing_newline_is_imported(load):
    _, rows = load("a,b\r\nx,y\r\nz,w")
    assert rows == [("x", "y"), ("z", "w")]


def test_malformed_row_with_invalid_utf8_is_one_reject(run_cli, write_csv, sqlite_url, fetch):
    path = write_csv(b"a,b\n1,2\nx\xff,y,z\n3,4\n")
    result = run_cli("import", path, "--table", "t", "--db", sqlite_url, "--json")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert fetch(sqlite_url, "SELECT * FROM t ORDER BY rowid") == [(1, 2), (3, 4)]
    rejects_file = path.with_suffix(".rejects.csv")
    result = run_cli(
        "import", path, "--table", "u", "--db", sqlite_url, "--rejects", rejects_file, "-q"
    )
    with open(rejects_file, newline="", encoding="utf-8") as handle:
        (reject,) = list(csv.DictReader(handle))
    assert reject["record"] == "2"
    assert "expected 2 fields, found 3" in reject["reason"]
    assert "x\\xff,y,z" in "".join(reject.values())


def test_quoted_crlf_at_every_block_boundary_is_kept(load):
    """Arrow loses the LF of a quoted CRLF whose CR ends a parse block. Rows of 13 bytes
    put a CR at every offset modulo the 1 KiB block, so some CR ends a block."""
    rows = "".join(f'{i:05d},"a\r\nb"\n' for i in range(1500))
    summary, stored = load("id,v\n" + rows, dialect=Dialect(max_record_bytes=1024))
    assert summary.processed == 1500
    assert {value for _, value in stored} == {"a\r\nb"}


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("content", "delimiter"),
    [
        pytest.param('name;city\n"Smith; John";Paris\nann;"Rome, IT"\n', ";", id="semicolon"),
        pytest.param("name\tcity\nSmith, John\tParis\nann\tRome\n", "\t", id="tab"),
        pytest.param("name|city\nSmith, John|Paris\nann|Rome\n", "|", id="pipe"),
        pytest.param("name,city\nSmith; John,Paris\nann,Rome\n", ",", id="comma"),
    ],
)
def test_delimiter_is_detected_and_reported(load, content, delimiter):
    summary, rows = load(content)
    assert len(rows) == 2 and all(len(row) == 2 for row in rows)
    assert rows[1][0] == "ann"
    assert summary.dialect is not None
    assert summary.dialect["delimiter"] == delimiter
    assert "delimiter" in summary.dialect["detected"]


def test_semicolon_file_with_decimal_commas(load):
    _, rows = load("id;price;qty\n1;2,50;3\n2;10,00;4\n")
    assert rows == [(1, "2,50", 3), (2, "10,00", 4)]


def test_single_quotes_are_detected(load):
    summary, rows = load("name,city\n'Smith, John',Paris\n'Doe, Jane',Rome\n")
    assert rows == [("Smith, John", "Paris"), ("Doe, Jane", "Rome")]
    assert summary.dialect is not None and summary.dialect["quote"] == "'"


def test_backslash_escapes_are_detected(load):
    summary, rows = load('name,quote\nann,"she said \\"hi\\""\nbob,"plain"\n')
    assert rows == [("ann", 'she said "hi"'), ("bob", "plain")]
    assert summary.dialect is not None and summary.dialect["escape"] == "\\"


def test_a_stray_quote_inside_a_field_is_text(load):
    _, rows = load('item,size\nscreen,27" wide\ncable,2m\n')
    assert rows == [("screen", '27" wide'), ("cable", "2m")]


def test_preamble_lines_are_skipped_and_reported(load):
    content = "Sales export\nGenerated on 2024-05-01 by ACME, Inc.\n\nid,name,qty\n1,a,2\n2,b,3\n"
    summary, rows = load(content)
    assert rows == [(1, "a", 2), (2, "b", 3)]
    assert summary.dialect is not None and summary.dialect["skipped_lines"] == 3


def test_a_first_row_of_data_is_not_taken_for_a_header(load, sqlite_url, fetch):
    summary, rows = load("1,2.5,2024-01-01\n2,3.5,2024-01-02\n")
    assert rows == [(1, 2.5, "2024-01-01"), (2, 3.5, "2024-01-02")]
    assert [name for name, _ in columns_of(fetch, sqlite_url)] == ["column1", "column2", "column3"]
    assert summary.dialect is not None and summary.dialect["header"] is False


def test_header_detection_can_be_overridden(load, sqlite_url, fetch):
    _, rows = load("1,2\n3,4\n", dialect=Dialect(header=True))
    assert rows == [(3, 4)]
    assert [name for name, _ in columns_of(fetch, sqlite_url)] == ["c_1", "c_2"]
    _, rows = load("name,city\nann,paris\n", table="u", dialect=Dialect(header=False))
    assert rows == [("name", "city"), ("ann", "paris")]


def test_column_names_replace_the_header(load, sqlite_url, fetch):
    _, rows = load("x,y\nann,paris\n", dialect=Dialect(columns=("name", "city")))
    assert rows == [("ann", "paris")]
    assert [name for name, _ in columns_of(fetch, sqlite_url)] == ["name", "city"]


def test_quoted_empty_is_empty_text_and_unquoted_empty_is_null(load):
    _, rows = load('a,b,n\n"",,\nx,"",1\n')
    assert rows == [("", None, None), ("x", "", 1)]


# --------------------------------------------------------------------------- encodings


def test_utf8_bom_is_dropped(load, sqlite_url, fetch):
    _, rows = load(b"\xef\xbb\xbfname,city\nJos\xc3\xa9,M\xc3\xa1laga\n")
    assert rows == [("José", "Málaga")]
    assert columns_of(fetch, sqlite_url)[0][0] == "name"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_detected_with_or_without_a_bom(load, encoding):
    summary, rows = load("name;city\r\nJosé;Málaga\r\n日本;東京\r\n".encode(encoding))
    assert rows == [("José", "Málaga"), ("日本", "東京")]
    assert summary.dialect is not None and summary.dialect["encoding"].startswith("utf-16")


def test_latin1_with_the_encoding_given(load):
    _, rows = load(
        "name,city\nJosé,Málaga\n".encode("latin-1"), dialect=Dialect(encoding="latin-1")
    )
    assert rows == [("José", "Málaga")]


def test_latin1_without_the_encoding_is_refused_naming_the_byte(load):
    content = "name,city\nJosé,Málaga\nRené,Zürich\n".encode("latin-1")
    with pytest.raises(InputError, match=r"0xe9.*--encoding"):
        load(content)


# --------------------------------------------------------------------------- explicit options


def test_explicit_delimiter_wins_and_a_one_column_header_is_flagged(load):
    summary, rows = load("sku;name\nA1;one\n", dialect=Dialect(delimiter=","))
    assert rows == [("A1;one",)]
    assert any("';'" in note for note in summary.notes)


def test_dataset_import_with_the_wrong_delimiter_names_the_likely_one(write_csv, sqlite_url):
    with pytest.raises(InputError, match="delimiter ';'"):
        import_csv(
            write_csv("sku;name;price\nA;n;1\n"),
            sqlite_url,
            dataset="products",
            dialect=Dialect(delimiter=","),
        )


def test_skip_lines(load):
    summary, rows = load(
        "junk, with, commas\nmore junk\nid,name\n1,a\n", dialect=Dialect(skip_lines=2)
    )
    assert rows == [(1, "a")]
    assert summary.dialect is not None and summary.dialect["skipped_lines"] == 2


def test_comment_lines_are_dropped_outside_quotes(load):
    content = '# exported\nid,note\n1,"multi\n# not a comment"\n# a comment\n2,b\n'
    _, rows = load(content, dialect=Dialect(comment="#"))
    assert rows == [(1, "multi\n# not a comment"), (2, "b")]


def test_null_tokens(load):
    _, rows = load(
        'a,n\nNULL,\\N\nx,NA\n"NA",1\n', dialect=Dialect(null_values=("NULL", "\\N", "NA"))
    )
    assert rows == [(None, None), ("x", None), ("NA", 1)]


def test_type_overrides_and_no_infer(load, sqlite_url, fetch):
    _, rows = load("zip,price\n10115,2.50\n", types={"zip": "string", "price": "decimal(10,2)"})
    assert rows == [("10115", "2.50")]
    _, rows = load("n,flag\n1,true\n", table="u", infer=False)
    assert rows == [("1", "true")]
    assert [kind for _, kind in columns_of(fetch, sqlite_url, "u")] == ["TEXT", "TEXT"]


def test_cli_reports_the_dialect_it_used(run_cli, write_csv, sqlite_url):
    path = write_csv("id;name\n1;ann\n")
    result = run_cli("import", path, "--table", "t", "--db", sqlite_url)
    assert result.code == 0, result.stderr
    assert "read as: delimiter ';' (detected)" in result.stdout
    result = run_cli("import", path, "--table", "u", "--db", sqlite_url, "--delimiter", ";")
    assert "read as: delimiter ';'," in result.stdout


def test_cli_bad_type_option_is_a_one_line_error(run_cli, write_csv, sqlite_url):
    result = run_cli(
        "import", write_csv("a\n1\n"), "--table", "t", "--db", sqlite_url, "--type", "a=money"
    )
    assert result.code == 2
    assert_one_line_error(result.stderr, "unknown type")


# --------------------------------------------------------------------------- random dialects

PIECES = st.sampled_from([",", ";", "\t", "|", '"', "'", "\n", "\r\n", " ", "é", "日", "x", "0"])
VALUES = st.lists(PIECES, max_size=10).map(lambda pieces: "v" + "".join(pieces) + "w")
NAMES = st.sampled_from(["id", "name", "", "name", "Name", "price", "zip", "select"])


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    width = draw(st.integers(1, 5))
    header = draw(st.lists(NAMES, min_size=width, max_size=width))
    codes = st.from_regex(r"0[0-9]{1,5}", fullmatch=True)  # zip-like: must stay text
    column = st.one_of(VALUES, codes)
    rows = draw(st.lists(st.lists(column, min_size=width, max_size=width), max_size=40))
    return header, rows


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    table=tables(),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    terminator=st.sampled_from(["\n", "\r\n"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    padding=st.integers(0, 900),
)
def test_random_tables_in_random_dialects_come_back_exactly(
    tmp_path_factory, table, delimiter, terminator, quoting, padding
):
    """Written by Python's csv module, read back with the delimiter given and small blocks
    (1 KiB), so records and quoted line breaks fall across block boundaries."""
    header, rows = table
    if header and all(not name for name in header) and not rows:
        header = ["a"] * len(header)
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter=delimiter, lineterminator=terminator, quoting=quoting)
    writer.writerow(header)
    writer.writerow(["p" * padding] + ["q"] * (len(header) - 1))  # shifts the block boundaries
    writer.writerows(rows)
    directory = tmp_path_factory.mktemp("dialects")
    path = directory / "data.csv"
    path.write_bytes(text.getvalue().encode("utf-8"))
    db = directory / f"{uuid.uuid4().hex}.db"

    dialect = Dialect(delimiter=delimiter, header=True, max_record_bytes=1024)
    summary = import_csv(path, f"sqlite:///{db}", table="t", dialect=dialect)

    assert (summary.status, summary.processed, summary.failed) == ("completed", len(rows) + 1, 0)
    with connect_sqlite(str(db)) as conn:
        back = conn.execute("SELECT * FROM t ORDER BY rowid").fetchall()[1:]
    assert back == [tuple(row) for row in rows]


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    width=st.integers(2, 6),
    rows=st.integers(2, 30),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    terminator=st.sampled_from(["\n", "\r\n", "\r"]),
    quote=st.sampled_from(['"', "'"]),
    data=st.data(),
)
def test_sniffing_finds_the_dialect_of_random_tables(
    tmp_path_factory, width, rows, delimiter, terminator, quote, data
):
    """Every value holds some other candidate delimiter, and the delimiter itself inside
    quotes: only the real dialect gives every record ``width`` fields."""
    others = [d for d in (",", ";", "\t", "|") if d != delimiter]
    cell = st.builds(
        lambda a, b, c: f"{a}{c}{b}",
        st.text("abcxyz", min_size=1, max_size=4),
        st.text("abcxyz", min_size=1, max_size=4),
        st.sampled_from(others),
    )
    table = data.draw(
        st.lists(st.lists(cell, min_size=width, max_size=width), min_size=rows, max_size=rows)
    )
    header = [f"col{j}" for j in range(width)]
    lines = [header, *table]
    quoted = [
        delimiter.join(
            f"{quote}{value}{delimiter}{quote}" if i else value for i, value in enumerate(line)
        )
        for line in lines
    ]
    path = tmp_path_factory.mktemp("sniff") / "data.csv"
    path.write_bytes((terminator.join(quoted) + terminator).encode())
    db = path.with_suffix(".db")

    summary = import_csv(path, f"sqlite:///{db}", table="t")

    assert summary.dialect is not None
    assert (summary.dialect["delimiter"], summary.dialect["quote"]) == (delimiter, quote)
    assert summary.processed == rows
    with connect_sqlite(str(db)) as conn:
        back = conn.execute("SELECT * FROM t ORDER BY rowid").fetchall()
    expected = [tuple(v + delimiter if i else v for i, v in enumerate(line)) for line in table]
    assert back == expected


def test_a_header_over_rows_ending_in_a_delimiter_keeps_its_names(load, sqlite_url, fetch):
    _, rows = load("id,name\n1,ann,\n2,bob,\n")
    assert rows == [(1, "ann", None), (2, "bob", None)]
    assert [name for name, _ in columns_of(fetch, sqlite_url)] == ["id", "name", "column3"]


def test_spaces_before_opening_quotes_are_rejected_not_shifted(load):
    """Arrow cannot parse `1, "a, b"` as two fields: the rows are rejected, the header is
    not mistaken for a preamble line over four-column data."""
    summary, rows = load('id,name,n\n1, "Smith, John",3\n2,plain,4\n')
    assert rows == [(2, "plain", 4)]
    assert [reject.record for reject in summary.rejects] == [1]


def test_a_single_record_of_numbers_is_data_and_of_words_a_header(load):
    summary, rows = load("1,2,3")
    assert rows == [(1, 2, 3)]
    summary, rows = load("a,b", table="u")
    assert (rows, summary.dialect is not None and summary.dialect["header"]) == ([], True)


def test_a_quoted_comma_in_a_one_column_file_is_not_a_second_column(load):
    _, rows = load('note\n"a, b"\n"c, d"\n"e"\n')
    assert rows == [("a, b",), ("c, d",), ("e",)]


def test_a_title_line_with_commas_is_a_preamble(load):
    summary, rows = load(
        "Sales report, Q1 2024, confidential\n"
        "id,region,month,amount,ok\n1,EU,1,2.5,true\n2,US,2,3.5,false\n"
    )
    assert rows == [(1, "EU", 1, 2.5, 1), (2, "US", 2, 3.5, 0)]
    assert summary.dialect is not None and summary.dialect["skipped_lines"] == 1


def test_a_quoted_value_longer_than_the_sample_keeps_its_quoting(load):
    long_value = "line\n" * 30_000  # 150 KB with line breaks: past the 64 KiB dialect sample
    summary, rows = load(
        f'id,text\n1,"{long_value}"\n2,short\n', dialect=Dialect(max_record_bytes=1 << 20)
    )
    assert rows == [(1, long_value), (2, "short")]
    assert summary.dialect is not None and summary.dialect["quote"] == '"'


def test_a_rejected_row_shows_empty_fields_as_written(write_csv, sqlite_url):
    summary = import_csv(
        write_csv("sku,name,price\nA,Apple,1.5\nB,,2\n"), sqlite_url, dataset="products"
    )
    (reject,) = summary.rejects
    assert reject.values == {"sku": "B", "name": "", "price": "2"}
