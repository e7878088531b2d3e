"""Agreement corpus: how often antioom reads messy, real-world-like CSV files the way DuckDB does.

    python benchmarks/corpus.py [--out DIR] [--keep] [--only PATTERN] [--report FILE]
                                [--antioom PATH] [--jobs N] [--timeout SECONDS] [--generate-only]

(``make corpus`` builds the ``.venv-corpus`` venv with antioom and DuckDB and runs this.)

1. Generates ~270 small CSV files, deterministically (fixed seeds, no downloads), into --out (a
   temporary directory by default, removed afterwards unless --keep). Each file is named after
   what it exercises (``enc-utf16le-bom-comma.csv``, ``hdr-duplicates-three.csv``, ...), so a
   failure explains itself. ``--only`` picks files by substring, or by glob if it has * ? [.
2. Imports each file as a user would, in a subprocess:
   ``antioom import FILE --table t --db sqlite:///TMP/N.db --json -q`` (30 s timeout), and reads
   table t back from SQLite in rowid order.
3. Reads the same file in-process with DuckDB's ``read_csv`` and its default auto-detection.
   DuckDB refusing a file is a valid outcome and is recorded as such.
4. Compares row counts and cells, columns by position, after a light normalisation so that two
   type systems compare fairly: NULL stays NULL; numbers compare numerically (with a relative
   tolerance for floats) when both sides are numbers or canonical number text (``01234`` is not
   canonical: it is text); true/false equals 1/0; dates, times and timestamps compare as ISO
   text (time zones in UTC). Nothing else is normalised (no trimming, no case folding).
5. Classifies each file (``same``, ``same_rows``, ``diff_rows``, ``duckdb_refused``,
   ``antioom_refused``, ``antioom_failed``), flags BAD antioom outcomes (a traceback on stderr,
   exit code 1, a timeout, a "completed" import with 0 rejected rows whose stored rows differ
   from DuckDB's), prints a summary and writes a markdown report (or JSON if --report ends in
   .json) that lists every file that is not ``same`` with a one-line explanation.

DuckDB is the reference, not the truth: where the two disagree, either may be the one that is
wrong (antioom keeps leading-zero codes as text on purpose, for instance). The report says which
kind of disagreement each file shows so that the differences can be triaged.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import decimal
import fnmatch
import io
import json
import math
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

TIMEOUT_S = 30.0
REFUSED_EXIT_CODES = (2, 3, 6)  # bad options, bad input, a table that cannot take the data
RANDOM_FILES = 60
SAMPLE_CHARS = 60  # how much of a cell a one-line explanation shows


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str  # the file name, e.g. "delim-semicolon-crlf.csv"
    data: bytes
    note: str  # what the file exercises, in a few words


class Corpus:
    """Collects the cases; names are unique and say what each file exercises."""

    def __init__(self) -> None:
        self.cases: list[Case] = []
        self._names: set[str] = set()

    def add(self, name: str, content: str | bytes, note: str, *, encoding: str = "utf-8") -> None:
        filename = f"{name}.csv"
        if filename in self._names:
            raise ValueError(f"duplicate case name {filename}")
        self._names.add(filename)
        data = content if isinstance(content, bytes) else content.encode(encoding)
        self.cases.append(Case(filename, data, note))


def render(
    rows: Sequence[Sequence[str]],
    *,
    delim: str = ",",
    eol: str = "\n",
    quote: str = '"',
    quote_all: bool = False,
    final_eol: bool = True,
) -> str:
    """Rows of text as CSV: fields quoted when needed (or always), quotes doubled."""

    def cell(value: str) -> str:
        if quote_all or any(ch in value for ch in (delim, quote, "\n", "\r")):
            return quote + value.replace(quote, quote * 2) + quote
        return value

    text = eol.join(delim.join(cell(value) for value in row) for row in rows)
    return text + eol if final_eol and rows else text


DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|", "colon": ":"}
LINE_ENDINGS = {"lf": "\n", "crlf": "\r\n"}

ORDERS_HEADER = ["id", "customer", "amount", "ordered_on", "paid"]
ORDERS_ROWS = [
    ["1", "Alice Martin", "19.99", "2024-01-05", "true"],
    ["2", "Bob Stone", "5.00", "2024-01-06", "false"],
    ["3", "Carla Diaz", "120.50", "2024-02-11", "true"],
    ["4", "Dev Patel", "0.99", "2024-02-29", "false"],
    ["5", "Emma Brown", "1500", "2024-03-01", "true"],
    ["6", "Femi Ade", "42.10", "2024-03-15", "true"],
    ["7", "Gus Lee", "7.25", "2024-04-02", "false"],
    ["8", "Hana Sato", "310.00", "2024-04-30", "true"],
]
ORDERS = [ORDERS_HEADER, *ORDERS_ROWS]


def orders_text(**options: Any) -> str:
    return render(ORDERS, **options)


def family_delimiters(c: Corpus) -> None:
    for dname, delim in DELIMITERS.items():
        for ename, eol in LINE_ENDINGS.items():
            c.add(
                f"delim-{dname}-{ename}",
                orders_text(delim=delim, eol=eol),
                f"orders table, {dname}-separated, {ename}",
            )
        rows = [ORDERS_HEADER, *ORDERS_ROWS[:3]]
        rows.append(["9", f"Stone{delim} Bob", "12.00", "2024-05-01", "false"])
        c.add(
            f"delim-{dname}-quoted-delimiter",
            render(rows, delim=delim),
            f"a quoted value containing the {dname} delimiter",
        )
    c.add(
        "delim-colon-quoted-times",
        'id:started:label\n1:"2024-01-05 10:30:00":a\n2:"2024-01-06 11:45:10":b\n'
        '3:"2024-01-07 08:00:00":c\n',
        "colon-separated, quoted timestamps contain colons",
    )
    c.add(
        "delim-semicolon-decimal-comma",
        "id;product;price;qty\n1;Cheese;3,50;2\n2;Bread;2,10;1\n3;Wine;12,99;6\n4;Milk;0,89;3\n",
        "European export: ; separator, decimal commas",
    )
    c.add(
        "delim-semicolon-decimal-comma-thousands",
        "id;item;total\n1;Laptop;1.234,56\n2;Phone;899,00\n3;Server;12.500,00\n4;Cable;4,99\n",
        "European export: . thousands separator and decimal comma",
    )
    c.add(
        "delim-semicolon-commas-in-text",
        "id;city;population\n1;Paris, France;2102650\n2;Lyon, France;522250\n"
        "3;Nice, France;342669\n",
        "; separated, unquoted commas inside values",
    )
    c.add(
        "delim-tab-commas-in-text",
        "id\tname\tnote\n1\tDoe, John\tcalls, emails\n2\tRoe, Jane\tnone\n3\tPoe, Ed\ta, b, c\n",
        "tab separated, unquoted commas inside values",
    )
    c.add(
        "delim-pipe-padded",
        "id | name | amount\n1 | Alice | 10\n2 | Bob | 20\n3 | Carla | 30\n",
        "pipe separated with spaces around every value",
    )
    c.add(
        "delim-tab-many-empty",
        "a\tb\tc\td\n1\t\t\t4\n\t2\t\t\n\t\t3\t\n1\t2\t3\t4\n",
        "tab separated, many empty cells",
    )
    c.add("delim-semicolon-single-row", "a;b;c\n1;2;3\n", "one data row, ; separated")
    c.add(
        "delim-comma-two-columns-semicolons-in-text",
        "id,remark\n1,a;b;c\n2,d;e\n3,f;g;h;i\n",
        "comma separated, more semicolons than commas in the values",
    )


def family_quotes(c: Corpus) -> None:
    add = c.add
    add(
        "quote-double-doubled",
        'id,said\n1,"He said ""hello"""\n2,"""quoted"" start"\n3,plain\n',
        'doubled "" escapes',
    )
    add(
        "quote-double-backslash-escape",
        'id,said\n1,"He said \\"hello\\""\n2,"\\"quoted\\" start"\n3,plain\n',
        'backslash-escaped \\" inside double quotes',
    )
    add(
        "quote-single",
        "id,name,city\n1,'Smith, John',Leeds\n2,'Doe, Jane',York\n3,Ann,Bath\n",
        "single-quote quoting of values with commas",
    )
    add(
        "quote-single-doubled",
        "id,name\n1,'O''Brien, Pat'\n2,'D''Arcy, Kim'\n3,'Smith, Al'\n",
        "single quotes, '' escapes",
    )
    add(
        "quote-single-backslash",
        "id,name\n1,'O\\'Brien, Pat'\n2,'D\\'Arcy, Kim'\n3,'Smith, Al'\n",
        "single quotes, backslash escapes",
    )
    add(
        "quote-single-with-double-inside",
        "id,quote\n1,'she said \"hi\", then left'\n2,'no, \"never\"'\n3,'ok, fine'\n",
        "single-quoted values that contain double quotes",
    )
    add("quote-all-fields", orders_text(quote_all=True), "every field quoted, header too")
    add(
        "quote-all-fields-semicolon-crlf",
        orders_text(quote_all=True, delim=";", eol="\r\n"),
        "every field quoted, ; separated, CRLF",
    )
    add(
        "quote-numbers-quoted",
        '"id","price"\n"1","2.50"\n"2","10"\n"3","0.99"\n',
        "numbers inside quotes",
    )
    add(
        "quote-newline-lf",
        'id,text,n\n1,"line one\nline two",5\n2,"single",6\n3,"a\n\nb",7\n',
        "LF newlines inside quoted values",
    )
    add(
        "quote-newline-crlf-in-crlf-file",
        'id,text,n\r\n1,"line one\r\nline two",5\r\n2,"single",6\r\n',
        "CRLF inside quotes, CRLF rows",
    )
    add(
        "quote-newline-crlf-in-lf-file",
        'id,text,n\n1,"line one\r\nline two",5\n2,"single",6\n',
        "CRLF inside quotes, LF rows",
    )
    add(
        "quote-delimiter-and-quote-inside",
        'id,v\n1,"a, ""b"", c"\n2,"x,y"\n3,z\n',
        "quoted values with both commas and doubled quotes",
    )
    add(
        "quote-inch-mark-unquoted",
        'id,product,price\n1,27" monitor,199\n2,5" tablet,99\n3,cable,5\n',
        'an unquoted " in the middle of a value',
    )
    add(
        "quote-apostrophes-unquoted",
        "id,name,remark\n1,O'Brien,it's fine\n2,D'Arcy,don't\n3,Smith,ok\n",
        "apostrophes in unquoted values (a ' quote sniffer trap)",
    )
    add(
        "quote-unterminated",
        'id,text\n1,"fine"\n2,"never closed\n3,"after"\n',
        "a quote that is never closed",
    )
    add(
        "quote-space-before-quote",
        'id,name,n\n1, "Smith, John",3\n2, "Doe, Jane",4\n',
        "a space before the opening quote",
    )
    add(
        "quote-space-after-closing",
        'id,name,n\n1,"Smith, John" ,3\n2,"Doe, Jane" ,4\n',
        "a space after the closing quote",
    )
    add("quote-empty-vs-empty", 'id,a,b\n1,"",\n2,,""\n3,"x",y\n', 'quoted empty "" next to empty')
    add(
        "quote-backslash-in-unquoted",
        "id,path\n1,C:\\Users\\bob\\file.txt\n2,D:\\data\n3,\\\\server\\share\n",
        "Windows paths with backslashes, unquoted",
    )
    add(
        "quote-backslash-before-closing-quote",
        'id,path,n\n1,"C:\\temp\\",1\n2,"D:\\x\\",2\n3,"plain",3\n',
        "a value ending in a backslash right before the closing quote",
    )
    add(
        "quote-backslash-escaped-delimiter",
        "id,v\n1,a\\,b\n2,c\\,d\n3,e\n",
        "MySQL-style \\, escaped delimiter, no quotes",
    )
    add(
        "quote-json-field",
        'id,payload\n1,"{""a"": 1, ""b"": [1, 2]}"\n2,"{""name"": ""x, y""}"\n3,"{}"\n',
        "JSON documents in a field",
    )
    add(
        "quote-html-field",
        'id,html\n1,"<a href=""https://x.test/?a=1,b=2"">link</a>"\n2,<br/>\n',
        "HTML with quoted attributes in a field",
    )
    add(
        "quote-mixed-quoted-unquoted",
        'id,name\n1,"Alice"\n2,Bob\n3,"Carla, Jr."\n4,Dev\n',
        "one column, some values quoted",
    )


def family_line_endings(c: Corpus) -> None:
    for name, eol in (("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")):
        c.add(f"eol-{name}-only", orders_text(eol=eol), f"{name} line endings throughout")
        c.add(
            f"eol-{name}-no-trailing-newline",
            orders_text(eol=eol, final_eol=False),
            f"{name} line endings, no newline after the last row",
        )
    lines = orders_text().splitlines()
    c.add(
        "eol-mixed-lf-crlf",
        "".join(line + ("\r\n" if i % 2 else "\n") for i, line in enumerate(lines)),
        "alternating LF and CRLF",
    )
    c.add(
        "eol-mixed-lf-cr",
        "".join(line + ("\r" if i % 3 == 2 else "\n") for i, line in enumerate(lines)),
        "mostly LF, every third line CR",
    )
    c.add("eol-double-cr", orders_text(eol="\r\r\n"), "\\r\\r\\n endings (a double conversion)")
    c.add("eol-trailing-blank-lines", orders_text() + "\n\n\n", "three blank lines at the end")
    c.add(
        "eol-trailing-blank-lines-crlf",
        orders_text(eol="\r\n") + "\r\n\r\n",
        "two CRLF blank lines at the end",
    )
    c.add(
        "eol-blank-lines-between-rows",
        "\n\n".join(lines) + "\n",
        "a blank line between every row (multi-column)",
    )
    c.add(
        "eol-whitespace-only-line",
        "\n".join([*lines[:4], "   ", *lines[4:]]) + "\n",
        "a line with only spaces in the middle",
    )
    c.add(
        "eol-delimiters-only-line",
        "\n".join([*lines[:4], ",,,,", *lines[4:]]) + "\n",
        "a line of only delimiters (all fields empty)",
    )


def family_encodings(c: Corpus) -> None:
    bom = "\ufeff"
    c.add("enc-utf8-bom-comma", bom + orders_text(), "UTF-8 BOM, comma")
    c.add(
        "enc-utf8-bom-semicolon-crlf",
        bom + orders_text(delim=";", eol="\r\n"),
        "UTF-8 BOM, semicolon, CRLF (Excel 'CSV UTF-8')",
    )
    c.add("enc-utf8-bom-tab", bom + orders_text(delim="\t"), "UTF-8 BOM, tab")
    c.add(
        "enc-utf8-bom-quoted-header",
        bom + orders_text(quote_all=True),
        "UTF-8 BOM directly before a quoted header",
    )
    c.add("enc-utf8-bom-only", bom, "nothing but a UTF-8 BOM")
    c.add("enc-utf8-bom-header-only", bom + "id,name\n", "UTF-8 BOM and a header, no rows")
    accents = (
        "id,name,city\n1,Chlo\u00e9 Dubois,S\u00e3o Paulo\n2,J\u00fcrgen M\u00fcller,"
        "K\u00f6ln\n3,Zo\u00eb Ba\u00f1os,M\u00e1laga\n4,\u00c5sa Str\u00f6m,Malm\u00f6\n"
    )
    c.add("enc-utf8-accents", accents, "UTF-8 accented Latin text")
    c.add(
        "enc-utf8-emoji-cjk",
        "id,label,score\n1,\u6771\u4eac\u90fd,5\n2,\U0001f600 happy,4\n3,\ud55c\uad6d\uc5b4,3\n"
        "4,\u0928\u092e\u0938\u094d\u0924\u0947,2\n",
        "CJK, Hangul, Devanagari and emoji",
    )
    c.add(
        "enc-utf8-rtl",
        "id,word\n1,\u0645\u0631\u062d\u0628\u0627\n2,\u05e9\u05dc\u05d5\u05dd\n",
        "Arabic and Hebrew text",
    )
    c.add(
        "enc-utf8-nbsp",
        "id,amount,name\n1,1\u00a0234,A\u00a0B\n2,5,C\n",
        "non-breaking spaces inside values",
    )
    c.add("enc-nul-byte", "id,name\n1,ab\x00cd\n2,ok\n", "a NUL byte inside a value")
    for name, codec in (("utf16le", "utf-16-le"), ("utf16be", "utf-16-be")):
        c.add(
            f"enc-{name}-bom-comma", bom + orders_text(), f"{codec} with BOM, comma", encoding=codec
        )
        c.add(
            f"enc-{name}-bom-tab-crlf",
            bom + accents.replace(",", "\t").replace("\n", "\r\n"),
            f"{codec} with BOM, tab, CRLF, accents (Excel 'Unicode text')",
            encoding=codec,
        )
    c.add("enc-utf16le-no-bom", orders_text(), "UTF-16 LE without a BOM", encoding="utf-16-le")
    c.add("enc-latin1-values", accents, "latin-1 encoded accented text", encoding="latin-1")
    c.add(
        "enc-latin1-header-semicolon",
        "Gr\u00f6\u00dfe;Preis;Stra\u00dfe\n42;9,99;Hauptstra\u00dfe\n38;12,50;K\u00f6nigsweg\n",
        "latin-1 header and values, ; separated",
        encoding="latin-1",
    )
    c.add(
        "enc-cp1252-smart-quotes",
        "id,quote,price\n1,\u201cquoted\u201d text,\u20ac5\n"
        "2,it\u2019s \u2013 fine\u2026,\u20ac10\n",
        "cp1252 curly quotes, en dash, ellipsis, euro sign",
        encoding="cp1252",
    )
    ascii_rows = "".join(f"{i},name {i},{i * 1.5}\n" for i in range(1, 6))
    c.add(
        "enc-invalid-utf8-one-row",
        b"id,name,value\n" + ascii_rows.encode() + b"6,caf\xe9 \xff,9.0\n7,ok,10.5\n",
        "one row with bytes that are not UTF-8 (latin-1 \\xe9 and \\xff)",
    )
    late_rows = "".join(f"{i},name {i},{i}\n" for i in range(1, 5001))
    c.add(
        "enc-invalid-utf8-late",
        b"id,name,value\n" + late_rows.encode() + b"5001,M\xfcller,1\n5002,ok,2\n",
        "a latin-1 byte at row 5001, after 5000 clean rows",
    )
    c.add(
        "enc-invalid-utf8-header",
        b"id,caf\xe9,n\n1,a,2\n2,b,3\n",
        "a byte that is not UTF-8 in the header",
    )


def family_preamble(c: Corpus) -> None:
    body = orders_text()
    c.add("pre-title-blank-header", "Sales report\n\n" + body, "a title line and a blank line")
    c.add(
        "pre-exported-on",
        "Exported on 2024-03-01 10:22:03 by admin\n" + body,
        "an 'Exported on ...' line before the header",
    )
    c.add(
        "pre-two-metadata-lines",
        "Report: Q1 sales\nGenerated by: ERP 7.2\n" + body,
        "two metadata lines before the header",
    )
    c.add(
        "pre-metadata-with-commas",
        "Sales report, Q1 2024, confidential\n" + body,
        "a title line with commas (3 fields; the table has 5)",
    )
    c.add(
        "pre-title-padded-with-delimiters",
        "Quarterly report,,,,\n,,,,\n" + body,
        "Excel-style title padded to the table width, then an all-empty row",
    )
    c.add("pre-blank-lines-before-header", "\n\n\n" + body, "three blank lines before the header")
    c.add(
        "pre-bank-statement-semicolon",
        "Account;DE12 3456 7890\nPeriod;01.01.2024 - 31.01.2024\n\n"
        "Booking date;Amount;Purpose\n02.01.2024;-12,50;Coffee shop\n"
        "03.01.2024;1.250,00;Salary\n05.01.2024;-99,99;Groceries\n",
        "bank export: key;value preamble, blank line, dates and decimal commas",
    )
    c.add("pre-excel-sep-hint", "sep=;\n" + orders_text(delim=";"), "Excel's 'sep=;' first line")
    c.add(
        "pre-comment-hash-top",
        "# exported by tool 3.1\n# units: EUR\n" + body,
        "# comment lines before the header",
    )
    lines = body.splitlines()
    c.add(
        "pre-comment-hash-interleaved",
        "\n".join([*lines[:3], "# checkpoint", *lines[3:6], "# another", *lines[6:]]) + "\n",
        "# comment lines between data rows",
    )
    c.add(
        "pre-hash-values-are-data",
        "ticket,colour,n\n#123,#ff0000,1\n#124,#00ff00,2\n#125,#0000ff,3\n",
        "values that start with # (not comments)",
    )
    c.add("pre-footer-total", body + "Total,,2005.83,,\n", "a 'Total' footer row")
    c.add("pre-footer-text", body + "\nEnd of report\n", "a blank line and 'End of report'")


def family_headers(c: Corpus) -> None:
    add = c.add
    add("hdr-none-ints", "1,2,3\n4,5,6\n7,8,9\n10,11,12\n", "no header, all integers")
    add("hdr-none-floats", "1.5,2.25,3.0\n4.5,5.75,6.0\n7.5,8.25,9.0\n", "no header, floats")
    add(
        "hdr-none-mixed-types",
        "1,Alice,2024-01-01,3.5\n2,Bob,2024-01-02,4.5\n3,Carla,2024-01-03,5.5\n",
        "no header; first row int, text, date, float",
    )
    add(
        "hdr-none-all-text",
        "apple,red\nbanana,yellow\ncherry,red\n",
        "no header, only text (ambiguous)",
    )
    add("hdr-none-single-numeric-row", "1,2,3\n", "one row of numbers and nothing else")
    add(
        "hdr-none-negative-and-dates",
        "-1,2024-01-05,0.5\n-2,2024-01-06,1.5\n",
        "no header, negative ints, dates, floats",
    )
    add("hdr-blank-middle", "id,,amount\n1,x,10\n2,y,20\n", "blank header name in the middle")
    add(
        "hdr-blank-first",
        ",name,amount\n0,x,10\n1,y,20\n",
        "blank first header name (pandas index export)",
    )
    add("hdr-blank-last", "id,name,\n1,x,\n2,y,\n", "blank last header name, empty column")
    add("hdr-blank-all", ",,\n1,2,3\n4,5,6\n", "every header name blank")
    add("hdr-blank-quoted", 'id,"",n\n1,a,2\n2,b,3\n', 'a quoted empty "" header name')
    add("hdr-blank-whitespace", "id,  ,n\n1,a,2\n2,b,3\n", "a header name of spaces")
    add("hdr-duplicates-two", "id,name,name\n1,a,b\n2,c,d\n", "duplicate header name")
    add("hdr-duplicates-three", "a,a,a\n1,2,3\n4,5,6\n", "the same name three times")
    add(
        "hdr-duplicates-clash-with-suffix",
        "a,a,a_1\n1,2,3\n4,5,6\n",
        "a duplicate whose renamed form already exists",
    )
    add("hdr-duplicates-case", "Name,name,NAME\nx,y,z\n", "names differing only in case")
    add(
        "hdr-duplicates-blank-and-column1",
        ",column1,\n1,2,3\n",
        "blank names next to a real 'column1'",
    )
    add(
        "hdr-reserved-words",
        "index,select,order,from,table,group\n1,2,3,4,5,6\n7,8,9,10,11,12\n",
        "SQL reserved words as names",
    )
    add(
        "hdr-sqlite-rowid-names",
        "rowid,oid,_rowid_,id\n10,20,30,1\n11,21,31,2\n",
        "SQLite's rowid aliases as column names",
    )
    add(
        "hdr-spaces-punctuation",
        "First Name,Amount ($),e-mail,2nd.col,a/b\nAl,1,a@x.test,x,y\n",
        "names with spaces, punctuation, a leading digit",
    )
    add(
        "hdr-padded-spaces",
        " id , name , amount \n1,Al,10\n2,Bo,20\n",
        "names with spaces around them",
    )
    add("hdr-quoted-names", '"id","name","amount"\n1,Al,10\n2,Bo,20\n', "quoted names, bare data")
    add(
        "hdr-unicode-names",
        "\u540d\u524d,Gr\u00f6\u00dfe,prix \u20ac\nx,1,2\ny,3,4\n",
        "non-ASCII names",
    )
    add("hdr-very-long-name", "id," + "n" * 300 + "\n1,2\n", "a 300-character name")
    add(
        "hdr-numeric-names",
        "2021,2022,2023\n10,20,30\n40,50,60\n",
        "year names over numeric data (header or data?)",
    )
    add(
        "hdr-sql-injection-name",
        'id,"x""; DROP TABLE t; --"\n1,2\n',
        "a name with quotes and SQL in it",
    )
    add("hdr-newline-in-name", 'id,"first\nname"\n1,Al\n', "a name with a newline in it")
    add(
        "hdr-only-names-no-data-types",
        "id,name\nid,name\nid,name\n",
        "data rows repeating the header",
    )


def family_values(c: Corpus) -> None:
    add = c.add
    add(
        "val-leading-zero-zip",
        "city,zip\nBoston,02134\nNewark,07102\nNew York,10001\n",
        "US zip codes, some with a leading zero",
    )
    add("val-leading-zero-codes", "code,qty\n0007,1\n0012,2\n0100,3\n", "codes 0007 0012 0100")
    zips = "".join(f"{i},{10000 + i}\n" for i in range(1, 3001))
    add(
        "val-leading-zero-late",
        "id,zip\n" + zips + "3001,01234\n3002,20500\n",
        "5-digit zips; the first leading zero at row 3001",
    )
    add(
        "val-zero-and-fractions",
        "a,b\n0,0.5\n0,0.25\n10,-0.75\n",
        "a plain 0 and 0.x values (numbers)",
    )
    add(
        "val-phone-numbers",
        "id,phone\n1,+1 555 0100\n2,(555) 010-0000\n3,0044 20 7946 0000\n",
        "phone numbers",
    )
    add(
        "val-thousands-quoted",
        'id,amount\n1,"1,234,567"\n2,"12,000"\n3,"999"\n',
        "quoted thousands separators in a comma file",
    )
    add(
        "val-thousands-space",
        "id;amount\n1;1 234 567\n2;12 000\n3;999\n",
        "space thousands separators",
    )
    add(
        "val-thousands-dots-semicolon",
        "id;amount\n1;1.234.567\n2;12.000\n3;999\n",
        "dot thousands separators in a ; file",
    )
    add(
        "val-decimal-comma-quoted",
        'id,price\n1,"3,50"\n2,"12,99"\n3,"0,89"\n',
        "decimal commas in quoted values of a comma file",
    )
    add(
        "val-currency",
        'id,price\n1,$1.50\n2,"$1,234.50"\n3,\u20ac12\n4,\u00a33.20\n',
        "currency symbols",
    )
    add("val-percent", "id,rate\n1,12.5%\n2,100%\n3,0%\n", "percentages")
    add(
        "val-negative-parentheses",
        "id,balance\n1,(123.45)\n2,200.00\n3,(0.50)\n",
        "accounting negatives in parentheses",
    )
    add("val-scientific", "id,x\n1,1e10\n2,6.02E23\n3,-1.5e-7\n4,2.5\n", "scientific notation")
    add(
        "val-int64-edges",
        "id,n\n1,9223372036854775807\n2,-9223372036854775808\n3,0\n",
        "the int64 extremes",
    )
    add(
        "val-bigint-overflow",
        "id,n\n1,12345678901234567890\n2,1\n3,99999999999999999999999\n",
        "integers beyond int64",
    )
    add(
        "val-long-decimals",
        "id,x\n1,0.1000000000000000055511151231257827\n2,3.14159265358979323846\n",
        "decimals with more digits than a double holds",
    )
    add("val-trailing-zeros", "id,x\n1,1.50\n2,2.500\n3,10.0\n", "decimals with trailing zeros")
    add("val-plus-sign", "id,delta\n1,+5\n2,-3\n3,+0.5\n", "numbers with a leading +")
    add("val-hex", "id,mask\n1,0x1F\n2,0xFF\n3,0x00\n", "hexadecimal literals")
    add("val-nan-inf", "id,x\n1,NaN\n2,inf\n3,-Infinity\n4,1.5\n", "NaN and infinities")
    add("val-dates-iso", "id,day\n1,2024-01-05\n2,2024-12-31\n3,1999-02-28\n", "ISO dates")
    add("val-dates-us", "id,day\n1,01/05/2024\n2,12/31/2024\n3,02/28/1999\n", "US dates MM/DD/YYYY")
    add(
        "val-dates-eu-slash",
        "id,day\n1,05/01/2024\n2,31/12/2024\n3,28/02/1999\n",
        "European dates DD/MM/YYYY",
    )
    add(
        "val-dates-eu-dots",
        "id;day\n1;05.01.2024\n2;31.12.2024\n3;28.02.1999\n",
        "German dates DD.MM.YYYY",
    )
    add(
        "val-dates-text",
        'id,day\n1,"Jan 5, 2024"\n2,"Dec 31, 2024"\n3,"Feb 28, 1999"\n',
        "dates written out in English",
    )
    add(
        "val-dates-invalid",
        "id,day\n1,2024-02-30\n2,2024-13-01\n3,2024-01-05\n",
        "impossible ISO dates",
    )
    add(
        "val-timestamps-space",
        "id,at\n1,2024-01-05 10:00:00\n2,2024-12-31 23:59:59\n",
        "timestamps with a space",
    )
    add(
        "val-timestamps-t-z",
        "id,at\n1,2024-01-05T10:00:00Z\n2,2024-12-31T23:59:59Z\n",
        "ISO timestamps in UTC (T...Z)",
    )
    add(
        "val-timestamps-offset",
        "id,at\n1,2024-01-05T10:00:00+02:00\n2,2024-12-31T23:59:59-05:00\n",
        "ISO timestamps with offsets",
    )
    add(
        "val-timestamps-millis",
        "id,at\n1,2024-01-05 10:00:00.123\n2,2024-12-31 23:59:59.999\n",
        "timestamps with milliseconds",
    )
    add("val-times", "id,at\n1,10:30\n2,23:59:59\n3,00:00:01\n", "times of day")
    add("val-bool-lower", "id,ok\n1,true\n2,false\n3,true\n", "true/false")
    add("val-bool-upper", "id,ok\n1,TRUE\n2,FALSE\n3,True\n", "TRUE/FALSE/True")
    add("val-bool-yes-no", "id,ok\n1,yes\n2,no\n3,Yes\n", "yes/no")
    add("val-bool-t-f", "id,ok\n1,t\n2,f\n3,t\n", "t/f")
    add("val-bool-y-n", "id,ok\n1,Y\n2,N\n3,Y\n", "Y/N")
    add("val-bool-01", "id,ok\n1,1\n2,0\n3,1\n", "1/0 flags")
    add("val-empty-fields", "a,b,c\n1,,3\n,,\n4,5,\n", "empty fields, a row of them")
    add("val-quoted-empty-fields", 'a,b,c\n1,"",3\n"","",""\n4,5,""\n', 'quoted empty "" fields')
    add(
        "val-null-tokens",
        "id,v\n1,NULL\n2,\\N\n3,NA\n4,N/A\n5,null\n6,None\n7,-\n8,x\n",
        "strings that other tools read as NULL",
    )
    add(
        "val-whitespace-around-text",
        "id,name\n1,  Alice\n2,Bob  \n3,  Carla  \n",
        "spaces around text values",
    )
    add("val-whitespace-around-numbers", "id,n\n1, 42\n2,7 \n3,  9  \n", "spaces around numbers")
    add("val-tabs-inside-values", "id,text\n1,a\tb\n2,c\td\n", "tabs inside comma-separated values")
    ints = "".join(f"{i},{i * 3}\n" for i in range(1, 5001))
    add(
        "val-mixed-type-late",
        "id,n\n" + ints + "5001,n/a\n5002,7\n",
        "5000 integers, then text at row 5001",
    )
    add(
        "val-int-then-float-late",
        "id,n\n" + ints + "5001,7.5\n",
        "5000 integers, then a decimal at row 5001",
    )
    add(
        "val-uuid",
        "id,key\n1,123e4567-e89b-12d3-a456-426614174000\n2,00000000-0000-0000-0000-000000000000\n",
        "UUIDs",
    )
    add(
        "val-urls-with-commas",
        'id,url\n1,"https://x.test/?a=1,2&b=3"\n2,https://x.test/p\n',
        "URLs, one quoted because of a comma",
    )
    add("val-ip-addresses", "host,ip\na,192.168.0.1\nb,10.0.0.255\nc,::1\n", "IP addresses")
    add("val-versions", "pkg,version\na,1.10\nb,1.2\nc,1.2.3\n", "version numbers (1.10 != 1.1)")


def family_shapes(c: Corpus) -> None:
    add = c.add
    add("shape-single-column", "name\nAlice\nBob\nCarla\n", "one column")
    add(
        "shape-single-column-blank-lines",
        "name\nAlice\n\nBob\n\n\nCarla\n",
        "one column with blank lines (NULL rows)",
    )
    add(
        "shape-single-column-blank-lines-trailing",
        "name\nAlice\n\nBob\n\n",
        "one column, blank lines in the middle and at the end",
    )
    add(
        "shape-single-column-crlf-blank",
        "name\r\nAlice\r\n\r\nBob\r\n",
        "one column, CRLF, a blank line",
    )
    add("shape-single-column-numbers-no-header", "1\n2\n3\n4\n", "one column of numbers, no header")
    add(
        "shape-single-column-quoted-empty",
        'name\n"Alice"\n""\n"Bob"\n',
        'one column with a quoted "" value',
    )
    add(
        "shape-single-column-with-commas-quoted",
        'note\n"a, b"\n"c, d"\n"e"\n',
        "one column whose values are quoted because of commas",
    )
    add("shape-header-only", "id,name,amount\n", "a header and no rows")
    add("shape-header-only-no-newline", "id,name,amount", "a header without a newline, no rows")
    add("shape-empty", b"", "an empty file (0 bytes)")
    add("shape-only-newline", "\n", "a single newline")
    add("shape-only-blank-lines", "\n\n\n", "only blank lines")
    add("shape-one-cell", "x\n", "one value, one line")
    add("shape-one-row", "a,b\n1,2\n", "a header and one row")
    for width, delim_name in ((200, "comma"), (200, "semicolon")):
        delim = DELIMITERS[delim_name]
        rng = random.Random(width)
        header = [f"c{i}" for i in range(1, width + 1)]
        rows = [[str(rng.randint(0, 999)) for _ in range(width)] for _ in range(10)]
        add(
            f"shape-wide-{width}-{delim_name}",
            render([header, *rows], delim=delim),
            f"{width} columns, 10 rows",
        )
    add(
        "shape-ragged-extra-fields",
        "a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n11,12,13,14,15\n",
        "some rows with extra fields",
    )
    add(
        "shape-ragged-missing-fields",
        "a,b,c\n1,2,3\n4,5\n6,7,8\n9\n",
        "some rows with missing fields",
    )
    add("shape-ragged-last-row-short", "a,b,c\n1,2,3\n4,5,6\n7,8\n", "the last row is short")
    add("shape-ragged-first-row-short", "a,b,c\n1,2\n3,4,5\n6,7,8\n", "the first data row is short")
    rng = random.Random(100)
    long_text = " ".join(
        rng.choice(("lorem", "ipsum", "dolor", "sit", "amet")) for _ in range(20000)
    )
    long_text = long_text[:100_000]
    add(
        "shape-long-field-100kb",
        f"id,text,n\n1,{long_text},5\n2,short,6\n",
        "a 100 KB unquoted field",
    )
    lines_text = "\n".join(long_text[i : i + 80] for i in range(0, len(long_text), 80))
    add(
        "shape-long-field-100kb-quoted-newlines",
        f'id,text,n\n1,"{lines_text}",5\n2,short,6\n',
        "a 100 KB quoted field with newlines",
    )
    add(
        "shape-long-field-1500kb",
        f"id,text\n1,{long_text * 15}\n2,short\n",
        "a 1.5 MB field (over antioom's 1 MiB record limit)",
    )
    add(
        "shape-trailing-delimiter-all-lines",
        render(ORDERS).replace("\n", ",\n"),
        "a trailing comma on every line, header too",
    )
    add(
        "shape-trailing-delimiter-data-only",
        render(ORDERS[:1]) + render(ORDERS[1:]).replace("\n", ",\n"),
        "a trailing comma on data lines only",
    )
    add(
        "shape-trailing-delimiter-semicolon",
        render(ORDERS, delim=";").replace("\n", ";\n"),
        "a trailing ; on every line",
    )
    many = "".join(f"{i},item {i},{i % 97}.{i % 100:02d},{i % 2 == 0}\n" for i in range(1, 10001))
    add("shape-10k-rows", "id,name,price,flag\n" + many, "10,000 rows")
    add("shape-many-empty-columns", "a,b,c,d,e,f\n1,,,,,\n2,,,,,\n", "mostly empty columns")


def family_spectrum(c: Corpus) -> None:
    """Small classics of CSV parsing, in the spirit of csv-spectrum (content written here)."""
    add = c.add
    add("spectrum-simple", "a,b,c\n1,2,3\n", "the simplest file")
    add(
        "spectrum-comma-in-quotes",
        'name,street,city,zip\nMaria,12 Elm Rd.,"Springfield, OR",07042\n'
        'Tom,1 Main St.,"Portland, ME",04101\n',
        "a quoted comma, zips with leading zeros",
    )
    add("spectrum-escaped-quotes", 'a,b\n1,"ha ""ha"" ha"\n3,4\n', "doubled quotes")
    add(
        "spectrum-json",
        'key,val\n1,"{""type"": ""Point"", ""coordinates"": [102.0, 0.5]}"\n',
        "JSON in a field",
    )
    add(
        "spectrum-newlines", 'a,b,c\n1,2,3\n"Once upon \na time",5,6\n7,8,9\n', "newline in a field"
    )
    add(
        "spectrum-newlines-crlf",
        'a,b,c\r\n1,2,3\r\n"Once upon \r\na time",5,6\r\n7,8,9\r\n',
        "CRLF in a field, CRLF rows",
    )
    add(
        "spectrum-quotes-and-newlines",
        'a,b\n1,"ha \n""ha"" \nha"\n3,4\n',
        "doubled quotes and newlines in one field",
    )
    add(
        "spectrum-utf8",
        "city,country,note\nK\u00f8benhavn,Danmark,sm\u00f8rrebr\u00f8d\n"
        "Z\u00fcrich,Schweiz,M\u00fcesli\n",
        "UTF-8 text",
    )
    add("spectrum-empty", 'a,b,c\n1,"",""\n2,3,4\n', "quoted empty fields")
    add("spectrum-empty-crlf", 'a,b,c\r\n1,"",""\r\n2,3,4\r\n', "quoted empty fields, CRLF")
    add(
        "spectrum-location-coordinates",
        'Location,Lat,Long,Text\n"Eiffel Tower, Paris",48.8584,2.2945,"48\u00b051\u203230\u2033N"\n'
        '"Sydney Opera House",-33.8568,151.2153,"33\u00b051\u203224\u2033S"\n',
        "coordinates: signed decimals and degree/minute/second text",
    )


# Random tables written by Python's csv module in random dialects -----------------------------

WORDS = ("alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "zeta", "theta", "iota")
TRICKY_TEXT = (
    "plain",
    "with, comma",
    "with; semicolon",
    "with|pipe",
    "with\ttab",
    'say "hi"',
    "it's",
    "two\nlines",
    "crlf\r\ninside",
    "  padded  ",
    "caf\u00e9",
    "na\u00efve \u2713",
    "",
    "#hash",
    "trailing space ",
    "x:y",
    "\u6771\u4eac",
)
QUOTINGS: tuple[Literal[0, 1, 2, 3], ...] = (
    csv.QUOTE_MINIMAL,
    csv.QUOTE_MINIMAL,
    csv.QUOTE_ALL,
    csv.QUOTE_NONNUMERIC,
)
COLUMN_KINDS = ("int", "float", "word", "text", "date", "timestamp", "bool", "code", "sparse")


def random_value(kind: str, rng: random.Random, *, allow_backslash: bool) -> Any:
    """A Python value for csv.writer; numbers stay numbers (QUOTE_NONNUMERIC leaves them bare)."""
    if kind == "int":
        return rng.randint(-10_000, 1_000_000)
    if kind == "float":
        return round(rng.uniform(-1000, 1000), rng.randint(0, 4))
    if kind == "word":
        return rng.choice(WORDS)
    if kind == "text":
        text = rng.choice(TRICKY_TEXT)
        return text + "\\x" if allow_backslash and rng.random() < 0.05 else text
    if kind == "date":
        return (dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 2000))).isoformat()
    if kind == "timestamp":
        moment = dt.datetime(2020, 1, 1) + dt.timedelta(seconds=rng.randint(0, 10**8))
        return moment.isoformat(sep=" ")
    if kind == "bool":
        return rng.choice(("true", "false"))
    if kind == "code":
        return f"{rng.randint(0, 9999):04d}"
    return "" if rng.random() < 0.7 else rng.choice(WORDS)  # sparse


def family_random(c: Corpus, count: int = RANDOM_FILES) -> None:
    delimiters = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
    quoting_names = {
        csv.QUOTE_MINIMAL: "minimal",
        csv.QUOTE_ALL: "all",
        csv.QUOTE_NONNUMERIC: "nonnumeric",
    }
    for index in range(count):
        rng = random.Random(10_000 + index)
        delim = rng.choice(list(delimiters))
        quote = rng.choice(('"', '"', "'"))
        backslash = rng.random() < 0.25
        quoting = rng.choice(QUOTINGS)
        eol = rng.choice(("\n", "\r\n"))
        header = rng.random() < 0.9
        bom = rng.random() < 0.08
        kinds = [rng.choice(COLUMN_KINDS) for _ in range(rng.randint(1, 10))]
        nrows = rng.choice((1, 2, 5, 20, 50, 100, 300))
        out = io.StringIO()
        writer = csv.writer(
            out,
            delimiter=delim,
            quotechar=quote,
            quoting=quoting,
            lineterminator=eol,
            doublequote=not backslash,
            escapechar="\\" if backslash else None,
        )
        if header:
            writer.writerow(f"{rng.choice(WORDS)}_{i}" for i in range(len(kinds)))
        for _ in range(nrows):
            writer.writerow(
                random_value(kind, rng, allow_backslash=not backslash) for kind in kinds
            )
        name = "-".join(
            (
                f"random-{index:03d}",
                delimiters[delim],
                "squote" if quote == "'" else "dquote",
                "backslash" if backslash else "doubled",
                "crlf" if eol == "\r\n" else "lf",
                quoting_names[quoting],
                "header" if header else "noheader",
                *(["bom"] if bom else []),
            )
        )
        note = f"{len(kinds)} columns ({', '.join(kinds)}), {nrows} rows"
        c.add(name, ("\ufeff" if bom else "") + out.getvalue(), note)


FAMILIES: tuple[Callable[[Corpus], None], ...] = (
    family_delimiters,
    family_quotes,
    family_line_endings,
    family_encodings,
    family_preamble,
    family_headers,
    family_values,
    family_shapes,
    family_spectrum,
    family_random,
)


def build_corpus() -> list[Case]:
    corpus = Corpus()
    for family in FAMILIES:
        family(corpus)
    return corpus.cases


def select(cases: Iterable[Case], pattern: str | None) -> list[Case]:
    """All cases, or those whose name contains PATTERN (a glob if it has * ? or [)."""
    if not pattern:
        return list(cases)
    if any(ch in pattern for ch in "*?["):
        return [case for case in cases if fnmatch.fnmatch(case.name, pattern)]
    return [case for case in cases if pattern in case.name]


# ---------------------------------------------------------------------------------------------
# Running both readers
# ---------------------------------------------------------------------------------------------


@dataclass
class Table:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]


@dataclass
class AntioomRun:
    command: list[str]
    exit_code: int | None  # None: timed out
    seconds: float
    stdout: str
    stderr: str
    summary: dict[str, Any] | None = None  # the --json summary, when one was printed
    table: Table | None = None  # table t as stored, when it exists
    read_error: str | None = None  # reading table t back failed
    debug_tail: str | None = None  # the end of the traceback with ANTIOOM_DEBUG=1, after exit 1


@dataclass
class DuckRun:
    table: Table | None
    error: str | None


def run_antioom(
    exe: str, path: Path, db: Path, timeout: float, *, debug: bool = False
) -> AntioomRun:
    command = [exe, "import", str(path), "--table", "t", "--db", f"sqlite:///{db}", "--json", "-q"]
    env = dict(os.environ)
    env.pop("ANTIOOM_DB_URL", None)
    if debug:
        env["ANTIOOM_DEBUG"] = "1"
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        code: int | None = proc.returncode
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        out = exc.stdout if isinstance(exc.stdout, bytes) else b""
        err = exc.stderr if isinstance(exc.stderr, bytes) else b""
    run = AntioomRun(
        command,
        code,
        round(time.perf_counter() - start, 3),
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
    )
    for line in reversed(run.stdout.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                run.summary = json.loads(line)
            break
    return run


def read_sqlite(db: Path) -> Table | None:
    """Table t in insertion (rowid) order, or None if there is none."""
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.text_factory = lambda raw: raw.decode("utf-8", "backslashreplace")
    try:
        info = con.execute('PRAGMA table_info("t")').fetchall()
        if not info:
            return None
        columns = [row[1] for row in info]
        lowered = {name.lower() for name in columns}
        order = next((alias for alias in ("rowid", "_rowid_", "oid") if alias not in lowered), None)
        sql = 'SELECT * FROM "t"' + (f" ORDER BY {order}" if order else "")
        return Table(columns, [row[2] for row in info], con.execute(sql).fetchall())
    finally:
        con.close()


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_duckdb(path: Path) -> DuckRun:
    """DuckDB's reading of the file with its default auto-detection, or its error."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        con.execute("SET TimeZone = 'UTC'")
        source = f"read_csv({sql_string(str(path))})"
        described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        names = [str(row[0]) for row in described]
        types = [str(row[1]) for row in described]
        # Python values of TIMESTAMPTZ need pytz; as UTC wall-clock timestamps they do not.
        converted = [
            f"timezone('UTC', {sql_name(name)}) AS {sql_name(name)}"
            if kind == "TIMESTAMP WITH TIME ZONE"
            else f"CAST({sql_name(name)} AS VARCHAR) AS {sql_name(name)}"
            for name, kind in zip(names, types, strict=True)
            if kind in ("TIMESTAMP WITH TIME ZONE", "TIME WITH TIME ZONE")
        ]
        select = f"SELECT * REPLACE ({', '.join(converted)})" if converted else "SELECT *"
        rows = con.execute(f"{select} FROM {source}").fetchall()
        return DuckRun(Table(names, types, rows), None)
    except Exception as exc:  # DuckDB's errors, and any conversion of its values to Python
        return DuckRun(None, f"{type(exc).__name__}: {exc}")
    finally:
        con.close()


def duckdb_reason(error: str) -> str:
    """DuckDB's first line, with the line that says why (its errors are long)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return error
    reason = next((line for line in lines[1:] if not line.startswith("Original Line")), "")
    reason = reason.split(". ")[0].rstrip(".")
    if lines[0].endswith(".") or "CSV Error on Line" in lines[0]:
        return f"{lines[0]} {reason}".strip()
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------

MISSING = object()  # a cell beyond the end of a shorter row
NUMBER_TEXT = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|-?0?\.\d+(?:[eE][+-]?\d+)?")
ISO_MOMENT = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?"
)
ISO_TIME = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?")
TRUTH_WORDS = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "1": True,
    "on": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "0": False,
    "off": False,
}
DATE_FORMATS = ("%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%b %d, %Y", "%d-%m-%Y", "%Y/%m/%d")
# Kinds that are a difference of type or convention, not of content: antioom kept the text that
# DuckDB converted (or the reverse, losslessly), or kept a quoted "" as '' where DuckDB has NULL.
TYPE_PREFIX = "type: "


def as_number(value: Any) -> decimal.Decimal | None:
    """A number, from a numeric value or from canonical number text (``01234`` is not one)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | decimal.Decimal):
        return decimal.Decimal(value)
    if isinstance(value, float):
        return decimal.Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str) and NUMBER_TEXT.fullmatch(value):
        return decimal.Decimal(value)
    return None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    return None


def iso_text(value: Any) -> str | None:
    """Dates, times and timestamps (values or ISO text) as canonical ISO text, aware ones as UTC
    wall-clock time (DuckDB's TIMESTAMPTZ values are read as such)."""
    if isinstance(value, str):
        try:
            if ISO_MOMENT.fullmatch(value):
                value = (
                    dt.date.fromisoformat(value)
                    if len(value) == 10
                    else dt.datetime.fromisoformat(value)
                )
            elif ISO_TIME.fullmatch(value):
                value = dt.time.fromisoformat(value)
            else:
                return None
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        return moment.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return None


def text_of(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cells_equal(ours: Any, theirs: Any) -> bool:
    if ours is MISSING or theirs is MISSING:
        return False
    if ours is None or theirs is None:
        return ours is None and theirs is None
    if isinstance(ours, bool) or isinstance(theirs, bool):
        left, right = as_bool(ours), as_bool(theirs)
        return left is not None and left == right
    left_num, right_num = as_number(ours), as_number(theirs)
    if left_num is not None and right_num is not None:
        if left_num == right_num:
            return True
        if isinstance(ours, float) or isinstance(theirs, float):
            return math.isclose(float(left_num), float(right_num), rel_tol=1e-9, abs_tol=1e-12)
        return False
    left_iso, right_iso = iso_text(ours), iso_text(theirs)
    if left_iso is not None and right_iso is not None:
        return left_iso == right_iso
    return text_of(ours) == text_of(theirs)


def show(value: Any) -> str:
    if value is MISSING:
        return "(no cell)"
    if value is None:
        return "NULL"
    text = repr(value) if isinstance(value, str | bytes) else text_of(value)
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 3] + "..."


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | decimal.Decimal):
        return "number"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.time):
        return "time"
    return type(value).__name__


def number_readings(text: str) -> Iterable[str]:
    """The ways people write a number: as is, +5, ' 5 ', 1,234, 1 234, 1.234,56, 3,50."""
    stripped = text.strip().lstrip("+")
    yield stripped
    yield stripped.replace(",", "")
    yield stripped.replace(" ", "").replace("\u00a0", "")
    yield stripped.replace(".", "").replace(",", ".")
    yield stripped.replace(",", ".")


def text_reads_as(text: str, value: Any) -> str | None:
    """How ``text`` leniently read is ``value`` (a hint such as "leading zeros"), or None."""
    stripped = text.strip()
    if isinstance(value, bool):
        return "a boolean word" if TRUTH_WORDS.get(stripped.lower()) is value else None
    if isinstance(value, int | float | decimal.Decimal):
        target = float(value)
        for reading in number_readings(text):
            try:
                number = float(reading)
            except ValueError:
                continue
            if (
                number == target
                or (math.isnan(number) and math.isnan(target))
                or (math.isfinite(number) and math.isclose(number, target, rel_tol=1e-9))
            ):
                return number_hint(text)
        return None
    target_iso = iso_text(value)
    if target_iso is None:
        return None
    if iso_text(stripped) == target_iso:
        return "ISO text"
    for fmt in DATE_FORMATS:
        try:
            parsed = dt.datetime.strptime(stripped, fmt)
        except ValueError:
            continue
        if parsed.date().isoformat() == target_iso:
            return "a non-ISO date"
    return None


def number_hint(text: str) -> str:
    stripped = text.strip()
    if stripped != text:
        return "spaces around a number"
    if re.fullmatch(r"-?0\d+", stripped):
        return "leading zeros"
    if stripped.startswith("+"):
        return "a leading +"
    if "," in stripped:
        return "thousands separators or a decimal comma"
    if " " in stripped or "\u00a0" in stripped:
        return "space thousands separators"
    if not NUMBER_TEXT.fullmatch(stripped):
        return "a number's spelling (NaN, inf, 1.)"
    return "a number"


def cell_kind(ours: Any, theirs: Any) -> str:
    """What kind of disagreement two unequal cells show (antioom's value first)."""
    if ours is MISSING or theirs is MISSING:
        return "columns: a row has a different number of cells"
    if ours is None or theirs is None:
        if ours == "":
            return f"{TYPE_PREFIX}'' (antioom) vs NULL (DuckDB)"
        if theirs == "":
            return "null: NULL (antioom) vs '' (DuckDB)"
        return (
            "null: NULL (antioom) vs a value" if ours is None else "null: a value vs NULL (DuckDB)"
        )
    if isinstance(ours, str) and isinstance(theirs, str):
        return text_kind(ours, theirs)
    if isinstance(ours, str) or isinstance(theirs, str):
        text, value, text_side = (
            (ours, theirs, "antioom") if isinstance(ours, str) else (theirs, ours, "DuckDB")
        )
        value_side = "DuckDB" if text_side == "antioom" else "antioom"
        pair = f"text ({text_side}) vs {type_name(value)} ({value_side})"
        hint = text_reads_as(text, value)
        return f"{TYPE_PREFIX}{pair}, {hint}" if hint else f"value: {pair} that differ"
    if type_name(ours) == type_name(theirs):
        return f"value: {type_name(ours)}s differ"
    return f"value: {type_name(ours)} (antioom) vs {type_name(theirs)} (DuckDB)"


def text_kind(ours: str, theirs: str) -> str:
    if ours.strip() == theirs.strip():
        return "text: whitespace around values differs"
    for quote in ('"', "'"):
        if ours.replace(quote, "") == theirs.replace(quote, ""):
            return f"text: quote {quote} handling differs"
    if ours.replace("\\", "") == theirs.replace("\\", ""):
        return "text: backslash escape handling differs"
    if ours.replace("\r", "") == theirs.replace("\r", ""):
        return "text: carriage returns inside values differ"
    if "\ufffd" in ours + theirs or "\\x" in ours + theirs or not (ours + theirs).isascii():
        return "text: decoding differs"
    return "text: values differ"


@dataclass
class Result:
    name: str
    note: str
    outcome: str  # same, same_rows, diff_rows, duckdb_refused, antioom_refused, antioom_failed
    kind: str  # the (first) disagreement, coarse, for counting ("" when same)
    explanation: str  # one line
    cell_kinds: dict[str, int] = field(default_factory=dict)  # every unequal cell, by kind
    name_diffs: list[str] = field(default_factory=list)  # column names (not compared otherwise)
    bad: list[str] = field(default_factory=list)  # BAD antioom outcomes
    antioom_exit: int | None = None
    antioom_rows: int | None = None
    antioom_columns: list[str] | None = None
    antioom_dialect: dict[str, Any] | None = None
    antioom_notes: list[str] | None = None
    antioom_rejected: int | None = None
    antioom_stderr: str = ""
    antioom_seconds: float = 0.0
    duckdb_rows: int | None = None
    duckdb_columns: list[str] | None = None
    duckdb_types: list[str] | None = None
    duckdb_error: str | None = None
    duckdb_seconds: float = 0.0
    debug_tail: str | None = None


def first_line(text: str, limit: int = 160) -> str:
    line = next((part.strip() for part in text.strip().splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def generic(message: str, path: str) -> str:
    """An error message without the file's name, quoted bits and numbers: a kind to count."""
    message = message.replace(path, "FILE")
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)
    message = re.sub(r"\d+", "N", message)
    return message[:110]


def dialect_brief(summary: dict[str, Any] | None) -> str:
    """antioom's reading of the file, from the summary: ``read as ';' '"' header skip 1``."""
    report = (summary or {}).get("dialect") or {}
    if not report:
        return ""
    delimiter = "\\t" if report.get("delimiter") == "\t" else report.get("delimiter")
    parts = [f"delim {delimiter!r}", f"quote {report.get('quote')!r}"]
    if report.get("escape"):
        parts.append(f"escape {report['escape']!r}")
    parts.append("header" if report.get("header") else "no header")
    if report.get("skipped_lines"):
        parts.append(f"skip {report['skipped_lines']}")
    if report.get("encoding") not in (None, "utf-8"):
        parts.append(str(report["encoding"]))
    return "antioom read it as " + " ".join(parts)


def antioom_did(run: AntioomRun) -> str:
    if run.exit_code is None:
        return "antioom timed out"
    if run.exit_code == 0:
        rows = len(run.table.rows) if run.table else 0
        failed = (run.summary or {}).get("failed", 0)
        return f"antioom imported {rows} rows ({failed} rejected)"
    return f"antioom exit {run.exit_code}: {first_line(run.stderr, 120)}"


def compare(case: Case, path: Path, ours: AntioomRun, theirs: DuckRun) -> Result:
    result = Result(case.name, case.note, "", "", "")
    result.antioom_exit = ours.exit_code
    result.antioom_stderr = ours.stderr[-2000:]
    result.antioom_seconds = ours.seconds
    result.debug_tail = ours.debug_tail
    if ours.summary:
        result.antioom_dialect = ours.summary.get("dialect")
        result.antioom_notes = ours.summary.get("notes")
        result.antioom_rejected = ours.summary.get("failed")
    if ours.table is not None:
        result.antioom_rows = len(ours.table.rows)
        result.antioom_columns = ours.table.columns
    if theirs.table is not None:
        result.duckdb_rows = len(theirs.table.rows)
        result.duckdb_columns = theirs.table.columns
        result.duckdb_types = theirs.table.types
    result.duckdb_error = theirs.error
    result.bad = bad_flags(ours)

    if theirs.table is None:
        assert theirs.error is not None
        reason = duckdb_reason(theirs.error.partition(": ")[2])
        result.outcome = "duckdb_refused"
        result.kind = "DuckDB refused: " + generic(reason, str(path))
        result.explanation = f"DuckDB: {reason[:150]}; {antioom_did(ours)}"
        return result
    if ours.exit_code in REFUSED_EXIT_CODES:
        message = first_line(ours.stderr)
        result.outcome = "antioom_refused"
        result.kind = "antioom refused: " + generic(
            message.removeprefix("antioom: error: "), str(path)
        )
        result.explanation = f"{message} (DuckDB read {len(theirs.table.rows)} rows)"
        return result
    if ours.exit_code != 0:
        result.outcome = "antioom_failed"
        result.kind = "antioom failed: " + (
            "timeout" if ours.exit_code is None else f"exit {ours.exit_code}"
        )
        result.explanation = f"{antioom_did(ours)} (DuckDB read {len(theirs.table.rows)} rows)"
        return result
    if ours.read_error:
        result.outcome = "antioom_failed"
        result.kind = "antioom failed: table t unreadable"
        result.explanation = f"exit 0 but reading table t failed: {ours.read_error}"
        return result

    mine = ours.table or Table([], [], [])
    ref = theirs.table
    result.name_diffs = [
        f"{show(our_name)}/{show(their_name)}"
        for our_name, their_name in zip(mine.columns, ref.columns, strict=False)
        if our_name != their_name
    ][:5]
    read_as = dialect_brief(ours.summary)
    if len(mine.rows) != len(ref.rows):
        result.outcome = "diff_rows"
        result.kind, counts = row_count_kind(mine, ref)
        rejected = (ours.summary or {}).get("failed", 0)
        result.explanation = (
            f"{counts}; {len(mine.columns)} vs {len(ref.columns)} columns; "
            f"{rejected} rejected; {read_as}"
        )
    else:
        kinds, first = cell_differences(mine, ref)
        result.cell_kinds = dict(kinds)
        if first is None:
            result.outcome = "same"
        else:
            result.outcome = "same_rows"
            result.kind, result.explanation = first
            if len(kinds) > 1:
                others = ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common(4))
                result.explanation += f" [cells: {others}]"
            result.explanation += f"; {read_as}"
    completed = (ours.summary or {}).get("status") == "completed"
    if result.outcome != "same" and completed and not (ours.summary or {}).get("failed"):
        typing_only = result.outcome == "same_rows" and all(
            kind.startswith(TYPE_PREFIX) for kind in result.cell_kinds
        )
        result.bad.append(
            "silent (types only): completed, 0 rejected, only typing differs from DuckDB"
            if typing_only
            else "silent: completed, 0 rejected, stored rows differ from DuckDB's"
        )
    return result


def row_count_kind(mine: Table, ref: Table) -> tuple[str, str]:
    delta = len(mine.rows) - len(ref.rows)
    counts = f"antioom {len(mine.rows)} rows, DuckDB {len(ref.rows)} ({delta:+d})"

    def looks_like(row: Sequence[Any], names: Sequence[str]) -> bool:
        if not names or len(row) != len(names):
            return False
        alike = sum(cells_equal(value, name) for value, name in zip(row, names, strict=True))
        return alike >= max(1, (2 * len(names) + 2) // 3)

    if delta == 1 and looks_like(mine.rows[0], ref.columns):
        return "rows: header detection (antioom: first line is data, DuckDB: header)", counts
    if delta == -1 and looks_like(ref.rows[0], mine.columns):
        return "rows: header detection (antioom: first line is header, DuckDB: data)", counts
    if not mine.rows:
        return "rows: antioom stored no rows", counts
    if not ref.rows:
        return "rows: DuckDB read no rows", counts
    if len(ref.columns) == 1 and len(mine.columns) > 1:
        return "rows: DuckDB fell back to one column, antioom did not", counts
    if len(mine.columns) == 1 and len(ref.columns) > 1:
        return "rows: antioom fell back to one column, DuckDB did not", counts
    return f"rows: antioom has {'more' if delta > 0 else 'fewer'} rows", counts


def cell_differences(mine: Table, ref: Table) -> tuple[Counter[str], tuple[str, str] | None]:
    """Every unequal cell by kind, and the first one explained (same number of rows)."""
    kinds: Counter[str] = Counter()
    first: tuple[str, str] | None = None
    if len(mine.columns) != len(ref.columns):
        more = "more" if len(mine.columns) > len(ref.columns) else "fewer"
        kinds[f"columns: antioom has {more} columns"] += 1
    for number, (left, right) in enumerate(zip(mine.rows, ref.rows, strict=True), start=1):
        for column in range(max(len(left), len(right))):
            ours = left[column] if column < len(left) else MISSING
            theirs = right[column] if column < len(right) else MISSING
            if cells_equal(ours, theirs):
                continue
            kind = cell_kind(ours, theirs)
            kinds[kind] += 1
            if first is None:
                our_name = mine.columns[column] if column < len(mine.columns) else "-"
                their_name = ref.columns[column] if column < len(ref.columns) else "-"
                their_type = ref.types[column] if column < len(ref.types) else "-"
                where = f"row {number} col {column + 1} ({our_name!r} / {their_name!r})"
                first = (
                    kind,
                    f"{where}: antioom {show(ours)} vs DuckDB {show(theirs)} [{their_type}]; "
                    f"{len(mine.columns)} vs {len(ref.columns)} columns",
                )
    if first is not None and len(mine.columns) != len(ref.columns):
        more = "more" if len(mine.columns) > len(ref.columns) else "fewer"
        first = (f"columns: antioom has {more} columns", first[1])
    return kinds, first


def bad_flags(run: AntioomRun) -> list[str]:
    flags = []
    if "Traceback" in run.stderr or "Exception ignored" in run.stderr:
        flags.append("traceback on stderr")
    if run.exit_code == 1:
        flags.append(f"exit 1: {first_line(run.stderr, 140)}")
    if run.exit_code is None:
        flags.append(f"timeout after {run.seconds:.0f} s")
    if run.exit_code == 0 and run.summary is None:
        flags.append("exit 0 without a JSON summary")
    return flags


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def process(
    case: Case, index: int, corpus_dir: Path, db_dir: Path, exe: str, timeout: float
) -> Result:
    path = corpus_dir / case.name
    db = db_dir / f"{index}.db"
    ours = run_antioom(exe, path, db, timeout)
    try:
        ours.table = read_sqlite(db)
    except sqlite3.Error as exc:
        ours.read_error = f"{type(exc).__name__}: {exc}"
    if ours.exit_code == 1:  # again, for the traceback's last lines
        debug = run_antioom(exe, path, db_dir / f"{index}-debug.db", timeout, debug=True)
        lines = [line for line in debug.stderr.strip().splitlines() if line.strip()]
        ours.debug_tail = " | ".join(line.strip() for line in lines[-3:])
    start = time.perf_counter()
    theirs = read_duckdb(path)
    result = compare(case, path, ours, theirs)
    result.duckdb_seconds = round(time.perf_counter() - start, 3)
    return result


def default_antioom() -> str:
    candidate = Path(sys.executable).parent / "antioom"
    return str(candidate) if candidate.exists() else shutil.which("antioom") or str(candidate)


def versions(exe: str) -> dict[str, str]:
    info = {"python": sys.version.split()[0], "antioom": exe}
    try:
        import duckdb

        info["duckdb"] = duckdb.__version__
    except ImportError:
        info["duckdb"] = "missing"
    with contextlib.suppress(OSError):  # the commit the working tree started from
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    return info


OUTCOMES = ("same", "same_rows", "diff_rows", "duckdb_refused", "antioom_refused", "antioom_failed")


def is_silent(result: Result) -> bool:
    return any(flag.startswith("silent:") for flag in result.bad)


def is_typing_only(result: Result) -> bool:
    return any(flag.startswith("silent (types only)") for flag in result.bad)


def is_loud(result: Result) -> bool:
    """A traceback, exit 1, a timeout: BAD outcomes that are not about the data."""
    return any(not flag.startswith("silent") for flag in result.bad)


def summarise(results: list[Result]) -> dict[str, Any]:
    counts = Counter(result.outcome for result in results)
    readable = [result for result in results if result.duckdb_error is None]
    same_count = [result for result in readable if result.outcome in ("same", "same_rows")]
    typing_only = [
        result
        for result in readable
        if result.outcome == "same_rows"
        and all(kind.startswith(TYPE_PREFIX) for kind in result.cell_kinds)
    ]
    kinds = Counter(result.kind for result in results if result.outcome != "same")
    examples: dict[str, Result] = {}
    for result in results:
        examples.setdefault(result.kind, result)

    def pct(part: int, whole: int) -> float:
        return round(100 * part / whole, 1) if whole else 0.0

    return {
        "files": len(results),
        "outcomes": {outcome: counts.get(outcome, 0) for outcome in OUTCOMES},
        "duckdb_readable": len(readable),
        "same_row_count_pct": pct(len(same_count), len(readable)),
        "same_cells_pct": pct(counts.get("same", 0), len(readable)),
        "same_cells_but_types_pct": pct(counts.get("same", 0) + len(typing_only), len(readable)),
        "column_names_differ": sum(1 for result in results if result.name_diffs),
        "bad": {
            "loud (traceback, exit 1, timeout)": sum(map(is_loud, results)),
            "silent: stored rows differ, 0 rejected": sum(map(is_silent, results)),
            "silent (types only)": sum(map(is_typing_only, results)),
        },
        "kinds": [
            {
                "kind": kind,
                "files": n,
                "example": examples[kind].name,
                "explanation": examples[kind].explanation,
            }
            for kind, n in kinds.most_common()
        ],
    }


def print_summary(summary: dict[str, Any], results: list[Result], seconds: float) -> None:
    print(f"\n{summary['files']} files in {seconds:.0f} s")
    width = max(len(outcome) for outcome in OUTCOMES)
    for outcome, n in summary["outcomes"].items():
        print(f"  {outcome:<{width}}  {n:4d}")
    print(
        f"DuckDB read {summary['duckdb_readable']} files; on those antioom has the same row "
        f"count on {summary['same_row_count_pct']}%, the same cells on "
        f"{summary['same_cells_pct']}% ({summary['same_cells_but_types_pct']}% if differences "
        "of type only are forgiven)"
    )
    print(
        f"Column names (informational, not compared): {summary['column_names_differ']} files "
        "have at least one name that differs from DuckDB's"
    )
    print("\nMost common disagreements (files, kind, example):")
    for item in summary["kinds"][:15]:
        print(f"  {item['files']:4d}  {item['kind']}  ({item['example']})")
    print(f"\nBAD antioom outcomes: {summary['bad']}")
    for result in results:
        if is_loud(result) or is_silent(result):
            print(f"  {result.name}: {'; '.join(result.bad)}")


def markdown(summary: dict[str, Any], results: list[Result], info: dict[str, str]) -> str:
    out = ["# antioom vs DuckDB on the messy-CSV corpus", ""]
    out.append(", ".join(f"{key} {value}" for key, value in info.items()))
    out += ["", "| outcome | files |", "| --- | ---: |"]
    out += [f"| {outcome} | {n} |" for outcome, n in summary["outcomes"].items()]
    out += [
        "",
        f"DuckDB read {summary['duckdb_readable']} of {summary['files']} files; on those "
        f"antioom has the same row count on **{summary['same_row_count_pct']}%** and the same "
        f"cells on **{summary['same_cells_pct']}%** ({summary['same_cells_but_types_pct']}% "
        "if differences of type only are forgiven: antioom kept the text that DuckDB "
        "converted, or kept a quoted empty value as '' where DuckDB has NULL).",
        "",
        f"Column names are not compared; {summary['column_names_differ']} files have at least "
        "one that differs from DuckDB's (see the last section).",
        "",
        "## Kinds of disagreement",
        "",
        "| files | kind | example | what it shows |",
        "| ---: | --- | --- | --- |",
    ]
    out += [
        f"| {item['files']} | {cell(item['kind'])} | {item['example']} "
        f"| {cell(item['explanation'])} |"
        for item in summary["kinds"]
    ]
    loud = [result for result in results if is_loud(result)]
    silent = [result for result in results if is_silent(result)]
    typing = [result for result in results if is_typing_only(result)]
    out += ["", f"## BAD: tracebacks, exit 1, timeouts ({len(loud)} files)", ""]
    out += [
        f"- `{result.name}`: {cell('; '.join(result.bad))}"
        + (f" (debug: {cell(result.debug_tail)})" if result.debug_tail else "")
        for result in loud
    ]
    out += [
        "",
        f"## BAD: suspected silent corruption ({len(silent)} files)",
        "",
        "Completed with 0 rejected rows, but the stored rows differ from DuckDB's in count, "
        "columns or content (not only in type).",
        "",
    ]
    out += [f"- `{result.name}`: {cell(result.explanation)}" for result in silent]
    out += [
        "",
        f"## Completed with 0 rejected, types differ only ({len(typing)} files)",
        "",
        ", ".join(f"`{result.name}`" for result in typing),
    ]
    for outcome in OUTCOMES[1:]:
        chosen = [result for result in results if result.outcome == outcome]
        out += ["", f"## {outcome} ({len(chosen)} files)", ""]
        out += [
            f"- `{result.name}` ({cell(result.note)}): {cell(result.explanation)}"
            for result in chosen
        ]
    named = [result for result in results if result.name_diffs]
    out += ["", f"## Column names that differ, antioom/DuckDB ({len(named)} files)", ""]
    out += [f"- `{result.name}`: {cell(', '.join(result.name_diffs))}" for result in named]
    return "\n".join(out) + "\n"


def cell(text: str) -> str:
    """Text safe in a markdown table cell or list item, on one line."""
    return text.replace("|", "\\|").replace("\n", "\\n").replace("\r", "\\r")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="write the corpus here (default: a temp dir)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the corpus (and the SQLite files) after the run"
    )
    parser.add_argument(
        "--only",
        metavar="PATTERN",
        help="only files whose name contains PATTERN (a glob with * ? [)",
    )
    parser.add_argument("--report", type=Path, help="write a markdown (or .json) report here")
    parser.add_argument("--antioom", default=default_antioom(), help="the antioom executable")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel imports")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per import")
    parser.add_argument(
        "--generate-only", action="store_true", help="write the corpus and stop (implies --keep)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = select(build_corpus(), args.only)
    if not cases:
        print(f"no case matches {args.only!r}", file=sys.stderr)
        return 2
    corpus_dir = args.out or Path(tempfile.mkdtemp(prefix="antioom-corpus-"))
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for case in cases:
        (corpus_dir / case.name).write_bytes(case.data)
    print(f"{len(cases)} files in {corpus_dir}", flush=True)
    if args.generate_only:
        return 0
    if not Path(args.antioom).exists() and not shutil.which(args.antioom):
        print(f"antioom executable not found: {args.antioom}", file=sys.stderr)
        return 2
    try:
        import duckdb  # noqa: F401
    except ImportError:
        print(
            "duckdb is not installed: run `make corpus` (it builds .venv-corpus)", file=sys.stderr
        )
        return 2

    db_dir = corpus_dir / "_sqlite" if args.keep else Path(tempfile.mkdtemp(prefix="antioom-db-"))
    db_dir.mkdir(exist_ok=True)
    start = time.perf_counter()
    results: list[Result] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [
                pool.submit(process, case, index, corpus_dir, db_dir, args.antioom, args.timeout)
                for index, case in enumerate(cases)
            ]
            for done, future in enumerate(futures, start=1):
                results.append(future.result())
                if done % 50 == 0 or done == len(futures):
                    print(
                        f"  {done}/{len(futures)} files, {time.perf_counter() - start:.0f} s",
                        file=sys.stderr,
                    )
    finally:
        if not args.keep:
            shutil.rmtree(db_dir, ignore_errors=True)
            if args.out is None:
                shutil.rmtree(corpus_dir, ignore_errors=True)
    seconds = time.perf_counter() - start
    summary = summarise(results)
    print_summary(summary, results, seconds)
    if args.report:
        info = versions(args.antioom)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        if args.report.suffix == ".json":
            data = {
                "info": info,
                "summary": summary,
                "seconds": round(seconds, 1),
                "files": [asdict(result) for result in results],
            }
            args.report.write_text(json.dumps(data, indent=2, default=str) + "\n")
        else:
            args.report.write_text(markdown(summary, results, info))
        print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
