"""A lean keep-alive HTTP/1.1 transport for httpx: asyncio streams and a small codec.

httpx's default transport (httpcore over anyio) costs several hundred microseconds a request
in pool bookkeeping and stream layers, and degrades when many requests are in flight at once
(``docs/benchmarks.md``, figure ``official``). ilink's API is a few small JSON POSTs to one
host, so this transport keeps a small set of persistent connections per origin and does the
least work per request. It writes the request in one piece and reads the answer with the
stream's own ``readuntil``/``read`` (:mod:`ilink.http11`), which costs about a third of what
driving h11's state machine did.

Failure semantics are httpx's: a failed connect is ``httpx.ConnectError``/``ConnectTimeout``;
once any byte of a request may have reached the server, a failure is surfaced
(``WriteError``, ``ReadError``, ``RemoteProtocolError``, ``ReadTimeout``...) and the request
is never sent again by the transport, because a POST may already have been processed.
An idle connection the server closed (or one idle longer than ``keepalive_expiry``) is
dropped before reuse, so only a close racing the request itself can fail it.

Answers are read whole before they are returned (ilink's are small JSON documents); the
connection goes back to the pool at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .http11 import READ_LIMIT, head_bytes, read_response, request_head

__all__ = ["KeepAliveTransport"]

Origin = tuple[str, str, int]


class _Conn:
    """One HTTP/1.1 connection: its asyncio streams."""

    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def reusable(self, expiry: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and time.monotonic() - self.idle_since < expiry
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Origin:
    """The connections to one (scheme, host, port): a slot count and the idle ones."""

    def __init__(self, max_connections: int | None) -> None:
        # None: no limit (a semaphore nothing can exhaust keeps the code path the same)
        self.slots = asyncio.Semaphore(sys.maxsize if max_connections is None else max_connections)
        self.idle: deque[_Conn] = deque()


def _timeouts(t: Mapping[str, float | None]) -> dict[str, float | None]:
    """httpx's timeout dict (``Timeout.as_dict()``), every key present."""
    return {k: t.get(k) for k in ("connect", "read", "write", "pool")}


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """Persistent HTTP/1.1 connections, at most ``max_connections`` per origin (``None``: no
    limit). Each request costs the same however many connections are open.

    Requests wait for a free connection up to the request's ``pool`` timeout
    (``httpx.PoolTimeout``). ``ssl_context`` defaults to httpx's (same trust store).
    """

    def __init__(
        self,
        *,
        max_connections: int | None = 32,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._origins: dict[Origin, _Origin] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The request's bytes before taking a connection: a bad header fails here,
        # with nothing sent.
        head, body, chunked = request_head(request)
        stream = request.stream if body is None else None
        timeout = _timeouts(request.extensions.get("timeout") or {})
        status, headers, content = await self._round_trip(
            request.method, request.url, head, body, stream, chunked, timeout
        )
        return httpx.Response(
            status,
            headers=headers,
            content=content,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def request_bytes(
        self,
        method: str,
        url: httpx.URL,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: Mapping[str, float | None],
    ) -> tuple[int, bytes]:
        """One request whose body is known, without building httpx's ``Request`` and
        ``Response`` (the ilink API calls of :class:`ilink.pools.IlinkHttp`): the same
        connections, limits, timeouts (httpx's ``Timeout.as_dict()``) and errors. ``Host``
        is added, and ``Content-Length`` unless given, where there is a body or the method has
        one."""
        framing = [(b"Host", url.netloc)]
        if (body or method not in ("GET", "HEAD")) and not any(
            name.lower() == b"content-length" for name, _ in headers
        ):
            framing.append((b"Content-Length", b"%d" % len(body)))
        head = head_bytes(method, url.raw_path, [*framing, *headers])
        status, _, content = await self._round_trip(
            method, url, head, body, None, False, _timeouts(timeout)
        )
        return status, content

    async def _round_trip(
        self,
        method: str,
        url: httpx.URL,
        head: bytes,
        body: bytes | None,
        stream: Any,
        chunked: bool,
        t: dict[str, float | None],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections and slots belong to the loop that made them
            self._drop_idle()
            self._origins.clear()
            self._loop = loop
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(self._max)
        if origin.slots.locked():
            try:
                async with asyncio.timeout(t["pool"]):
                    await origin.slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection within the pool timeout") from None
        else:
            await origin.slots.acquire()  # a free slot is taken at once: no timer needed
        conn: _Conn | None = None
        try:
            conn = await self._checkout(origin, key, t["connect"])
            await self._write(conn, head, body, stream, chunked, t["write"])
            status, headers, content, keep = await read_response(conn.reader, method, t["read"])
        except BaseException:
            if conn is not None:
                conn.close()
            origin.slots.release()
            raise
        self._release(origin, conn, reuse=keep)
        return status, headers, content

    async def _checkout(self, origin: _Origin, key: Origin, connect: float | None) -> _Conn:
        while origin.idle:
            conn = origin.idle.pop()
            if conn.reusable(self._expiry):
                return conn
            conn.close()
        scheme, host, port = key
        ctx = None
        if scheme == "https":
            # httpx's own context: its trust store, SSL_CERT_FILE/SSL_CERT_DIR honoured
            ctx = self._ssl = self._ssl or httpx.create_ssl_context()
        try:
            async with asyncio.timeout(connect):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ctx, server_hostname=host if ctx else None, limit=READ_LIMIT
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connecting to {host}:{port}: {exc}") from None
        return _Conn(reader, writer)

    async def _write(
        self,
        conn: _Conn,
        head: bytes,
        body: bytes | None,
        stream: Any,
        chunked: bool,
        write: float | None,
    ) -> None:
        """The request on the wire: head and body in one write when the body is known,
        else the stream's chunks in chunked encoding. From the first byte on, nothing is
        retried: the server may have acted on the request."""
        writer = conn.writer
        try:
            if body is not None:
                writer.write(head + body)
                if not writer.transport.get_write_buffer_size():
                    # All of it is with the kernel: drain cannot wait, only report a
                    # connection lost meanwhile, so no timer is needed.
                    await writer.drain()
                    return
            async with asyncio.timeout(write):
                if body is None:
                    writer.write(head)
                    async for chunk in stream:
                        if not chunk:
                            continue
                        if chunked:
                            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        else:
                            writer.write(chunk)
                        await writer.drain()
                    if chunked:
                        writer.write(b"0\r\n\r\n")
                await writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("writing the request timed out") from None
        except OSError as exc:
            raise httpx.WriteError(f"writing the request: {exc}") from None

    def _release(self, origin: _Origin, conn: _Conn, *, reuse: bool) -> None:
        if reuse and not self._closed:
            conn.idle_since = time.monotonic()
            origin.idle.append(conn)
        else:
            conn.close()
        origin.slots.release()

    def _drop_idle(self) -> None:
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().close()

    async def aclose(self) -> None:
        self._closed = True
        self._drop_idle()
