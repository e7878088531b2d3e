"""Round trip: any table written by Python's csv module comes back exactly from SQLite.

Values contain delimiters, quotes, newlines, carriage returns and any Unicode. Each value is
wrapped in letters so that trimming (fields are trimmed by default) and type inference (it must
stay text) leave it unchanged; empty fields are covered by ``test_empty_fields_become_null``.
"""

from __future__ import annotations

import csv
import io
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antioom import import_csv
from antioom.sinks.sqlite_connection import connect as connect_sqlite

TRICKY = st.sampled_from([",", '"', "\n", "\r", " ", "\t", ";", "'", "é", "日", "🎉"])
ANY_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
VALUES = st.text(st.one_of(TRICKY, ANY_TEXT), max_size=12).map(lambda text: f"v{text}w")


# Python's csv module quotes a value with a line break only if the break is in its line
# terminator: with "\n" a lone "\r" would be written bare, ending the record (for any reader).
WRITER_STYLES = [
    {"lineterminator": "\r\n", "quoting": csv.QUOTE_MINIMAL},
    {"lineterminator": "\n", "quoting": csv.QUOTE_ALL},
]


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    width = draw(st.integers(1, 6))
    rows = draw(st.lists(st.lists(VALUES, min_size=width, max_size=width), max_size=20))
    return [f"col{i}" for i in range(width)], rows


@settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(table=tables(), style=st.sampled_from(WRITER_STYLES))
def test_csv_written_by_python_comes_back_exactly(tmp_path_factory, table, style):
    header, rows = table
    text = io.StringIO(newline="")
    writer = csv.writer(text, **style)
    writer.writerow(header)
    writer.writerows(rows)
    directory = tmp_path_factory.mktemp("roundtrip")
    path = directory / "data.csv"
    path.write_bytes(text.getvalue().encode("utf-8"))
    db = directory / f"{uuid.uuid4().hex}.db"

    summary = import_csv(path, f"sqlite:///{db}", table="t")

    assert (summary.status, summary.processed, summary.failed) == ("completed", len(rows), 0)
    with connect_sqlite(str(db)) as conn:
        back = conn.execute("SELECT * FROM t ORDER BY rowid").fetchall()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(t)")]
    assert columns == header
    assert back == [tuple(row) for row in rows]
