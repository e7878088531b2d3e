"""Dialect detection: delimiter, quote, escape, preamble and header, from a sample of text.

The approach is DuckDB's: parse the sample with every candidate dialect and keep the one
whose records agree on a column count. For each candidate the modal width ``W`` is found;
the records before the first ``W``-wide one are a preamble (titles, "exported on" lines);
after it, records of another width count against the candidate. Ranking, best first:

1. parses without a quoting error (a ``"`` closed in the middle of a field is one);
2. is really tabular: ``W >= 2`` with a majority of the records ``W`` wide (a candidate
   without quoting that splits what quoting with the same delimiter parses consistently is
   not tried: it is cutting quoted values);
3. explains the largest share of its records: ``W``-wide ones, minus other widths, minus
   preamble (a share, not a count: splitting quoted line breaks must not score more);
4. its quote opens fields somewhere (a ``'`` that only ever appears as an apostrophe
   does not count);
5. comes first in the candidate order: ``"`` before ``'`` before no quoting (so a quoted
   delimiter that recurs on every line is not taken for one more column), no escape before
   ``\\``, and ``,`` ``|`` ``;`` tab.

Anything the user set explicitly is not guessed. The header is then decided as DuckDB
does: the first record is data if each of its values fits its column's type as inferred
from the records below it; otherwise (or when every column is text) it is a header.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import pyarrow as pa
import pyarrow.compute as pc

from antioom.engine.casting import castable, infer_type
from antioom.errors import InputError

DELIMITERS = (",", "|", ";", "\t")
QUOTES = ('"', "'", "")
ESCAPES = ("", "\\")
MAX_SAMPLE_RECORDS = 20_480  # DuckDB's default sample size, in records
LIKELY_DELIMITERS = (";", "\t", "|", ",")


@dataclass(frozen=True)
class Candidate:
    delimiter: str
    quote: str  # "" for no quoting
    escape: str  # "" for none


@dataclass
class Parsed:
    """A sample parsed with one candidate: each record's fields and where it ends."""

    candidate: Candidate
    rows: list[list[str]]
    ends: list[int]  # character offset just after each record
    error: bool = False
    swallowed: bool = False  # an open quote runs past a quarter of the sample


class SampleTooShort(Exception):
    """A quoted value may run past the sample: sniff a longer one."""


@dataclass
class Sniffed:
    """The dialect found for a sample, and where its data starts."""

    delimiter: str
    quote: str
    escape: str
    header: bool
    width: int
    names: list[str]  # the header's names as written (stripped), or [] without a header
    preamble_end: int  # characters before the header (or the first data record)
    data_start: int  # characters before the first data record
    detected: list[str] = field(default_factory=list)  # which settings were guessed


def parse(text: str, candidate: Candidate, *, at_eof: bool) -> Parsed:
    """Parse ``text`` into records. Without ``at_eof`` the last record may be cut short, so
    it is left out; a quoting error there is the cut, not the file's fault."""
    ends: list[int] = []
    line_ends: list[int] = []

    def lines() -> Iterator[str]:
        position = 0
        for line in io.StringIO(text, newline=""):  # splits at \n, \r\n and \r
            position += len(line)
            line_ends.append(position)
            yield line

    reader = csv.reader(
        lines(),
        delimiter=candidate.delimiter,
        quotechar=candidate.quote or '"',
        quoting=csv.QUOTE_MINIMAL if candidate.quote else csv.QUOTE_NONE,
        escapechar=candidate.escape or None,
        doublequote=True,
        strict=True,
    )
    rows: list[list[str]] = []
    error = False
    try:
        for row in reader:
            rows.append(row)
            ends.append(line_ends[reader.line_num - 1])
            if len(rows) > MAX_SAMPLE_RECORDS:
                break
    except csv.Error as exc:
        error = at_eof or not str(exc).startswith("unexpected end of data")
    if not at_eof and rows:
        rows.pop()
        ends.pop()
    swallowed = not at_eof and len(text) - (ends[-1] if ends else 0) > len(text) // 4
    return Parsed(candidate, rows, ends, error, swallowed)


def candidates(
    text: str, delimiter: str | None, quote: str | None, escape: str | None
) -> list[Candidate]:
    """The dialects worth trying on ``text``, in preference order; explicit settings are
    fixed. A delimiter, quote or escape that never occurs would parse like the default."""
    if delimiter is not None:
        delimiters = [delimiter]
    else:  # the ones present, and one absent: a single column that never splits
        delimiters = [d for d in DELIMITERS if d in text]
        delimiters += [d for d in DELIMITERS if d not in text][:1]
    if quote is not None:
        quotes = [quote]
    else:
        quotes = [q for q in QUOTES if q == '"' or (q and q in text) or (not q and '"' in text)]
    found: list[Candidate] = []
    for q in quotes:
        if escape is not None:
            escapes = [escape]
        else:
            escapes = [e for e in ESCAPES if not e or (q and e in text)]
        for d in delimiters:
            found.extend(Candidate(d, q, e) for e in escapes if e != d and q != d)
    return found


@dataclass(frozen=True)
class _Fit:
    width: int
    start: int  # index of the first record of the modal width
    explained: Fraction  # share of the records that fit (see the ranking)
    quotes: bool  # the candidate's quote opens fields in the sample
    score: tuple[int | Fraction, ...]


def _quotes_fields(text: str, candidate: Candidate) -> bool:
    """Whether the candidate's quote opens a field somewhere (not just an apostrophe)."""
    q = candidate.quote
    if not q or q not in text:
        return False
    opening = re.compile(f"(?:^|[{re.escape(candidate.delimiter)}\r\n]){re.escape(q)}")
    return opening.search(text) is not None


def _fit(parsed: Parsed, order: int, fixed_start: bool, quotes: bool) -> _Fit | None:
    widths = [(i, len(row)) for i, row in enumerate(parsed.rows) if row]
    if not widths:
        return None
    if fixed_start:
        width, preamble = widths[0][1], 0
    else:
        counts = Counter(w for _, w in widths)
        width = max(counts, key=lambda w: (counts[w], w))
        preamble = next(k for k, (_, w) in enumerate(widths) if w == width)
    after = widths[preamble:]
    fit = sum(1 for _, w in after if w == width)
    bad = len(after) - fit
    tabular = width >= 2 and (fit >= 2 or len(after) == 1) and 2 * fit >= len(after)
    explained = Fraction(fit - bad - preamble, len(widths))
    score = (int(not parsed.error), int(tabular), explained, int(quotes), -order)
    return _Fit(width, widths[preamble][0], explained, quotes, score)


def sniff(
    text: str,
    *,
    at_eof: bool,
    delimiter: str | None = None,
    quote: str | None = None,
    escape: str | None = None,
    header: bool | None = None,
    preamble: bool = True,
    final: bool = True,
) -> Sniffed:
    """Detect what is not given. ``preamble=False``: the first record is the header (or the
    data), as when the user said how many lines to skip. Unless the sample is ``final`` (at
    its size limit), a quote left open over much of it raises SampleTooShort; in a final
    sample it counts as a quoting error (an apostrophe taken for a quote)."""
    tried: list[tuple[_Fit, Parsed]] = []
    for order, candidate in enumerate(candidates(text, delimiter, quote, escape)):
        parsed = parse(text, candidate, at_eof=at_eof)
        if parsed.swallowed:
            if not final:
                raise SampleTooShort
            parsed.error = True
        fit = _fit(parsed, order, not preamble, _quotes_fields(text, candidate))
        if fit is not None:
            tried.append((fit, parsed))
    quoting = {
        p.candidate.delimiter: f.explained
        for f, p in tried
        if f.quotes and not p.error and f.explained == 1
    }
    kept = [
        (f, p) for f, p in tried if f.quotes or f.explained >= quoting.get(p.candidate.delimiter, 0)
    ]
    if not kept:
        raise InputError("no records found")  # callers check for empty input first
    fit, parsed = max(kept, key=lambda pair: pair[0].score)
    detected = [
        name
        for name, given in (("delimiter", delimiter), ("quote", quote), ("escape", escape))
        if given is None
    ]
    rows = parsed.rows
    start, width = fit.start, fit.width
    if header is None:
        detected.append("header")
    full = [row for row in rows[start:] if len(row) == width]
    trailing = all(not row[-1] for row in full)
    stray_quotes = any('"' in value or "'" in value for row in full for value in row)
    if header is not False and (trailing or stray_quotes) and _is_short_header(rows, start, width):
        start, header = start - 1, True
        if not trailing:  # the wider rows do not fit this header: they become rejects
            width = len(rows[start])
    first = rows[start]
    if header is None:
        header = _looks_like_header(first, [r for r in rows[start + 1 :] if r], width)
    preamble_end = parsed.ends[start - 1] if start else 0
    data_start = parsed.ends[start] if header else preamble_end
    c = parsed.candidate
    return Sniffed(
        delimiter=c.delimiter,
        quote=c.quote,
        escape=c.escape,
        header=header,
        width=width,
        names=_header_names(first, width) if header else [],
        preamble_end=preamble_end,
        data_start=data_start,
        detected=detected + (["preamble"] if preamble and start else []),
    )


def _is_short_header(rows: list[list[str]], start: int, width: int) -> bool:
    """Whether the record just before the data can be its header, though narrower: more
    than half as wide, with no blank line between. Asked only where the rows give a reason
    (they end in a delimiter, or hold quote characters that did not parse as quoting: those
    rows are then rejected, not silently shifted under a header taken for a preamble);
    otherwise a narrower record there is a title line."""
    if start == 0 or not rows[start - 1]:
        return False
    return 2 * len(rows[start - 1]) > width


def _header_names(first: list[str], width: int) -> list[str]:
    """The header's names; a header one short of rows that end in a delimiter gets a blank
    (later generated) name for that last, empty column."""
    names = [name.strip() for name in first]
    return names + [""] * (width - len(names))


def _looks_like_header(first: list[str], data: list[list[str]], width: int) -> bool:
    """DuckDB's rule: a header unless each value of the first record fits the type of its
    column below it. All-text columns cannot tell, and files usually have a header."""
    data = [row for row in data if len(row) == width][:1000]
    if len(first) != width:
        return True
    if not data:  # a single record: data only if some value is typed (1,2,3), not all text
        values = [value.strip() for value in first if value.strip()]
        return all(infer_type(pa.array([value])) == "string" for value in values)
    if all(not value.strip() for value in first):
        return True
    types = []
    for j in range(width):
        values = pa.array([row[j].strip() for row in data], pa.string())
        types.append(infer_type(pc.filter(values, pc.greater(pc.utf8_length(values), 0))))
    if all(t == "string" for t in types):
        return True
    return not all(castable(value, t) for value, t in zip(first, types, strict=True))


def likely_delimiter(names: list[str], delimiter: str) -> str | None:
    """For a header read as one column: the delimiter it seems to be written with."""
    if len(names) != 1:
        return None
    for candidate in LIKELY_DELIMITERS:
        if candidate != delimiter and candidate in names[0]:
            return candidate
    return None
