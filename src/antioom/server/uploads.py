"""Request bodies → CSV bytes, incrementally: a raw body, or the ``file`` part of a multipart
form parsed with python-multipart's push parser. Nothing is spooled to memory or disk."""

from __future__ import annotations

import re
from urllib.parse import unquote

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
MAX_FILE_NAME = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def file_name(raw: str | None, *, quoted: bool = False) -> str | None:
    """An uploaded file's name as the record keeps it: its last path component, without
    control characters, at most 255 characters; None when there is none. ``quoted``: the
    name is percent-encoded (an ``X-File-Name`` header: headers are not UTF-8)."""
    if raw is None:
        return None
    name = unquote(raw, errors="replace") if quoted else raw
    name = _CONTROL.sub("", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:MAX_FILE_NAME] or None


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
        self.file_name: str | None = None  # a multipart file part's filename
        self.file_bytes = 0  # CSV bytes seen so far
        self.complete = False  # the body ended, whole
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
            self.file_bytes += len(chunk)
            return [chunk]
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InputError(f"malformed multipart body: {exc}") from None
        out, self._out = self._out, []
        self.file_bytes += sum(len(piece) for piece in out)
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
        self.complete = True

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
                name = params.get(b"filename")
                self.file_name = file_name(name.decode("utf-8", "replace")) if name else None
        self._header_name = b""
        self._header_value = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._out.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self._ended = True


class CloseUnreadBodies:
    """ASGI middleware: a response that starts before the request's body was read to its end
    (an upload refused at its start, an import that failed mid-body) says
    ``Connection: close``. Otherwise the server keeps the connection alive by reading the rest
    of the body, and a client that does not watch for an early answer (most do not: httpx,
    browsers without ``Expect: 100-continue``) sends the whole file before seeing it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length", "0").strip()
        unread = "transfer-encoding" in headers or not length.isdigit() or int(length) > 0

        async def tracked_receive() -> Message:
            nonlocal unread
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                unread = False
            return message

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start" and unread:
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, tracked_receive, tracked_send)
