"""Bytes in any encoding → valid UTF-8, with undecodable bytes kept visible, never fatal.

Everything after this stage (dialect sniffing, Arrow's parser, validation) sees UTF-8 only.
A byte that does not decode is not dropped or replaced silently: it becomes a *marker*, a
private-use character U+F780 + byte (U+F7FF for 0xFF), and the stage counts it. Validation
rejects every row holding a marker, with the original bytes shown as ``\\xff``; the marker
itself never reaches a database. Marker characters that were already in the input are only
looked for once a bad byte has been seen, so a clean file pays nothing.

Plain ASCII chunks of UTF-8 input pass through untouched: the common case costs one
``bytes.isascii()`` per read.
"""

from __future__ import annotations

import codecs
import re

from antioom.engine.source import Readable
from antioom.errors import ConfigError

MARKER_BASE = 0xF700  # marker of byte b is chr(MARKER_BASE + b), for b in 0x80..0xFF
MARKER_PATTERN = "[\uf780-\uf7ff]"  # RE2/Python syntax, for Arrow's regex kernels too
_MARKERS = re.compile(MARKER_PATTERN)
_SURROGATES_TO_MARKERS = {0xDC00 + b: MARKER_BASE + b for b in range(0x80, 0x100)}
BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def canonical_encoding(name: str) -> str:
    """The codec's canonical name (``latin1`` → ``iso8859-1``), or ConfigError if unknown."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise ConfigError(f"unknown encoding {name!r}") from None


def detect_encoding(head: bytes) -> str:
    """The encoding a file's first bytes announce: a BOM, or UTF-16's NUL pattern; else UTF-8.

    UTF-16 without a BOM shows as a NUL in every other byte of ASCII text, which no text
    encoding we would otherwise guess produces.
    """
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return encoding
    sample = head[:1024]
    if len(sample) >= 8:
        even_nuls = sample[0::2].count(0)
        odd_nuls = sample[1::2].count(0)
        half = len(sample) // 2
        if odd_nuls > 0.4 * half and even_nuls == 0:
            return "utf-16-le"
        if even_nuls > 0.4 * half and odd_nuls == 0:
            return "utf-16-be"
    return "utf-8"


class Utf8Reader:
    """A blocking reader of ``raw`` decoded from ``encoding`` and re-encoded as UTF-8.

    A UTF-8 BOM (and UTF-16's) is dropped. Sequences split between reads are carried over by
    the incremental decoder, so a read never ends inside a character.
    """

    def __init__(self, raw: Readable, encoding: str = "utf-8") -> None:
        self._raw = raw
        name = canonical_encoding(encoding)
        self.encoding = name
        self._passthrough = name == "utf-8"
        self._decoder = codecs.getincrementaldecoder("utf-8-sig" if name == "utf-8" else name)(
            "surrogateescape"
        )
        self._started = False
        self._done = False
        self.bad_bytes = 0  # undecodable bytes turned into markers so far

    def read(self, size: int = -1, /) -> bytes:
        while not self._done:
            data = self._raw.read(size)
            if not data:
                self._done = True
                return self._decode(b"", final=True)
            if self._passthrough and self._started and data.isascii() and not self._pending():
                return data
            self._started = True
            out = self._decode(data, final=False)
            if out:
                return out
        return b""

    def _pending(self) -> bool:
        return bool(self._decoder.getstate()[0])

    def _decode(self, data: bytes, *, final: bool) -> bytes:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:  # a codec that cannot escape (some multibyte ones)
            raise ConfigError(
                f"the input is not valid {self.encoding} ({exc.reason}); pass --encoding"
            ) from None
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            self.bad_bytes += sum(1 for ch in text if "\udc80" <= ch <= "\udcff")
            return text.translate(_SURROGATES_TO_MARKERS).encode("utf-8")

    def readable(self) -> bool:
        return True


def has_markers(text: str) -> bool:
    return _MARKERS.search(text) is not None


def show_markers(text: str) -> str:
    """``text`` with markers written back as the bytes they stand for (``\\xff``)."""
    return _MARKERS.sub(lambda match: f"\\x{ord(match.group()) - MARKER_BASE:02x}", text)


def byte_offset(text: str, index: int) -> int:
    """The offset in the undecoded UTF-8 input of character ``index`` of ``text``."""
    prefix = text[:index]
    return len(prefix.encode("utf-8")) - 2 * len(_MARKERS.findall(prefix))


def first_marker(text: str) -> tuple[int, int] | None:
    """(character offset, original byte) of the first marker in ``text``, if any."""
    match = _MARKERS.search(text)
    if match is None:
        return None
    return match.start(), ord(match.group()) - MARKER_BASE
