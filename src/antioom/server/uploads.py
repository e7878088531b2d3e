"""Request bodies → CSV bytes, incrementally: a raw body, or the ``file`` part of a multipart
form parsed with python-multipart's push parser. Nothing is spooled to memory or disk."""

from __future__ import annotations

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from antioom.errors import InputError

RAW_TYPES = {
    "text/csv",
    "application/csv",
    "text/plain",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/octet-stream",
}
FILE_FIELD = b"file"
MAX_PART_HEADER = 16 << 10  # our header buffers stay bounded whatever python-multipart does


class UnsupportedMediaType(Exception):
    """The request's content type is not one we can stream (HTTP 415)."""


class BodyDecoder:
    """Turns body chunks into CSV bytes: pass-through for raw bodies, the file part for forms."""

    def __init__(self, content_type: str) -> None:
        media, params = parse_options_header(content_type)
        media_type = media.decode("latin-1").lower()
        self._parser: MultipartParser | None = None
        self._out: list[bytes] = []
        self.found_file = False
        self._ended = False
        if media_type == "multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise InputError("multipart body without a boundary")
            self._in_file = False
            self._header_name = b""
            self._header_value = b""
            try:
                self._parser = MultipartParser(
                    boundary,
                    callbacks={
                        "on_part_begin": self._part_begin,
                        "on_header_field": self._header_field,
                        "on_header_value": self._header_value_data,
                        "on_header_end": self._header_end,
                        "on_part_data": self._part_data,
                        "on_part_end": self._part_end,
                        "on_end": self._end,
                    },
                )
            except FormParserError as exc:  # a boundary too long
                raise InputError(f"malformed multipart body: {exc}") from None
        elif media_type in RAW_TYPES or media_type == "":
            self.found_file = True
        else:
            raise UnsupportedMediaType(
                f"unsupported content type {media_type!r}: send multipart/form-data with a "
                "'file' field, or the CSV itself as text/csv"
            )

    def feed(self, chunk: bytes) -> list[bytes]:
        """The CSV bytes contained in ``chunk``."""
        if self._parser is None:
            return [chunk]
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InputError(f"malformed multipart body: {exc}") from None
        out, self._out = self._out, []
        return out

    def finish(self) -> None:
        """Check the body was complete; raise InputError otherwise.

        python-multipart's ``finalize`` accepts a body cut anywhere, so the closing boundary is
        checked here: without it the file part may end in a cut-off record, and the import must
        fail rather than take that record as the last one.
        """
        if self._parser is not None and not self._ended:
            raise InputError("truncated multipart body: it ends before its closing boundary")
        if not self.found_file:
            raise InputError("the multipart body has no 'file' field")

    def _part_begin(self) -> None:
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header_size()

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header_size()

    def _check_header_size(self) -> None:
        if len(self._header_name) + len(self._header_value) > MAX_PART_HEADER:
            raise InputError(f"malformed multipart body: a part header over {MAX_PART_HEADER} B")

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            _, params = parse_options_header(self._header_value)
            if params.get(b"name") == FILE_FIELD:
                if self.found_file:  # which one is the CSV? Refuse rather than guess
                    raise InputError("the multipart body has more than one 'file' field")
                self._in_file = True
                self.found_file = True
        self._header_name = b""
        self._header_value = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._out.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self._ended = True
