"""The HTTP/1.1 client codec of :mod:`ilink.transport`: a request's bytes, and an answer
read off an ``asyncio.StreamReader`` (RFC 9112).

What it accepts is what a client must: a status line, header fields (no obs-fold), 1xx
answers skipped, a body framed by ``Transfer-Encoding: chunked``, by ``Content-Length``, or by
the connection's close; ``Connection: close`` and HTTP/1.0 honoured. Anything else is an
``httpx.RemoteProtocolError``; a header the request may not carry is an
``httpx.LocalProtocolError`` before a byte is sent. Errors are httpx's, as its own transports
raise them.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Sequence

import httpx

__all__ = ["READ_LIMIT", "head_bytes", "read_response", "request_head"]

#: The longest line (status line, header field, chunk size) an answer may have.
READ_LIMIT = 64 * 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\r\n\x00]")
_DIGITS = re.compile(rb"[0-9]+")
Headers = list[tuple[bytes, bytes]]


def request_head(request: httpx.Request) -> tuple[bytes, bytes | None, bool]:
    """The request line and header fields of an httpx request as bytes; the body when it
    is known (else the caller writes ``request.stream``); whether that stream goes chunked."""
    raw = request.headers.raw
    chunked = any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower() for name, value in raw
    )
    try:
        body: bytes | None = request.content
    except httpx.RequestNotRead:
        body = None  # a stream of unknown length
    return head_bytes(request.method, request.url.raw_path, raw), body, chunked


def head_bytes(method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The request line and header fields, checked: a name that is not a token or a value
    with CR, LF or NUL is an ``httpx.LocalProtocolError`` (nothing is sent)."""
    lines = [b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)]
    for name, value in headers:
        if not _is_token(name) or _FORBIDDEN_IN_VALUE.search(value):
            raise httpx.LocalProtocolError(f"illegal header field {name!r}")
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


@functools.lru_cache(maxsize=256)  # the same few field names on every request
def _is_token(name: bytes) -> bool:
    return _TOKEN.fullmatch(name) is not None


async def read_response(
    reader: asyncio.StreamReader, method: str, read_timeout: float | None
) -> tuple[int, Headers, bytes, bool]:
    """One answer: (status, header fields, body, whether the connection may be reused).
    ``read_timeout`` bounds each read, as httpx's read timeout does."""
    try:
        async with asyncio.timeout(read_timeout) as deadline:
            return await _answer(_Reads(reader, deadline, read_timeout), method)
    except TimeoutError:
        raise httpx.ReadTimeout("reading the response timed out") from None


class _Reads:
    """The reads of one answer, under one timer that each read restarts (one timer per
    answer instead of one per read)."""

    __slots__ = ("_deadline", "_loop", "_timeout", "first", "reader")

    def __init__(
        self, reader: asyncio.StreamReader, deadline: asyncio.Timeout, timeout: float | None
    ) -> None:
        self.reader = reader
        self._deadline = deadline
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self.first = True  # the answer's first bytes: a close there means a dropped request

    async def __call__(self, operation: Awaitable[bytes]) -> bytes:
        """Await one read of the stream, its failures as httpx's."""
        first, self.first = self.first, False
        if not first and self._timeout is not None:
            self._deadline.reschedule(self._loop.time() + self._timeout)
        try:
            return await operation
        except asyncio.IncompleteReadError as exc:
            if first and not exc.partial:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response."
                ) from None
            raise httpx.RemoteProtocolError("the server closed the connection mid-answer") from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("a line of the answer is too long") from None
        except OSError as exc:
            raise httpx.ReadError(f"reading the response: {exc}") from None


async def _answer(read: _Reads, method: str) -> tuple[int, Headers, bytes, bool]:
    reader = read.reader
    while True:
        head = await read(reader.readuntil(b"\r\n\r\n"))
        version, status, headers = _parse_head(head)
        if status >= 200:
            break
        if status == 101:
            raise httpx.RemoteProtocolError("the server switched protocols")
        # 1xx (100 Continue, 103 Early Hints): the real answer follows
    keep = version == b"HTTP/1.1"
    codings = b""
    length: bytes | None = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"close" in tokens:
                keep = False
            elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                keep = True
        elif lower == b"transfer-encoding":
            codings = value.lower()
        elif lower == b"content-length":
            if length is not None and value.strip() != length:
                raise httpx.RemoteProtocolError("conflicting Content-Length fields")
            length = value.strip()
    if method == "HEAD" or status in (204, 304):
        return status, headers, b"", keep
    if codings:
        if codings.rsplit(b",", 1)[-1].strip() == b"chunked":
            return status, headers, await _read_chunked(read), keep
        return status, headers, await _read_to_close(read), False
    if length is not None:
        if not _DIGITS.fullmatch(length):
            raise httpx.RemoteProtocolError(f"bad Content-Length {length!r}")
        return status, headers, await _read_exactly(read, int(length)), keep
    return status, headers, await _read_to_close(read), False


async def _read_exactly(read: _Reads, size: int) -> bytes:
    """``size`` bytes, read as they come (the timeout bounds each read, not the whole)."""
    parts: list[bytes] = []
    while size:
        piece = await read(read.reader.read(min(size, READ_LIMIT)))
        if not piece:
            raise httpx.RemoteProtocolError("the server closed the connection mid-answer")
        parts.append(piece)
        size -= len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # no copy in the usual case


async def _read_to_close(read: _Reads) -> bytes:
    parts: list[bytes] = []
    while piece := await read(read.reader.read(READ_LIMIT)):
        parts.append(piece)
    return b"".join(parts)


def _parse_head(head: bytes) -> tuple[bytes, int, Headers]:
    status_line, *fields = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise httpx.RemoteProtocolError(f"bad status line {status_line[:100]!r}")
    headers: Headers = []
    for line in fields:
        name, colon, value = line.partition(b":")
        if not colon or not _is_token(name) or _FORBIDDEN_IN_VALUE.search(value):
            raise httpx.RemoteProtocolError(f"bad header line {line[:100]!r}")
        headers.append((name, value.strip(b" \t")))
    return parts[0], int(parts[1]), headers


async def _read_chunked(read: _Reads) -> bytes:
    reader = read.reader
    parts: list[bytes] = []
    while True:
        line = await read(reader.readuntil(b"\r\n"))
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            break
        data = await _read_exactly(read, size + 2)
        if data[-2:] != b"\r\n":
            raise httpx.RemoteProtocolError("a chunk did not end with CRLF")
        parts.append(data[:-2])
    while (await read(reader.readuntil(b"\r\n"))) != b"\r\n":
        pass  # trailer fields: not used
    return b"".join(parts)
