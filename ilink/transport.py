"""A lean keep-alive HTTP/1.1 transport for httpx: asyncio streams and h11, nothing else.

httpx's default transport (httpcore over anyio) costs several hundred microseconds a request
in pool bookkeeping and stream layers, and degrades when many requests are in flight at once
(``docs/benchmarks.md``, figure ``official``). ilink's API is a few small JSON POSTs to one
host, so this transport keeps a small set of persistent connections per origin and does the
least work per request.

Failure semantics are httpx's: a failed connect is ``httpx.ConnectError``/``ConnectTimeout``;
once any byte of a request may have reached the server, a failure is surfaced
(``WriteError``, ``ReadError``, ``RemoteProtocolError``, ``ReadTimeout``...) and the request
is never sent again by the transport, because a POST may already have been processed.
An idle connection the server closed (or one idle longer than ``keepalive_expiry``) is
dropped before reuse, so only a close racing the request itself can fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

__all__ = ["KeepAliveTransport"]

_READ_SIZE = 64 * 1024
Origin = tuple[str, str, int]


class _Conn:
    """One HTTP/1.1 connection: the asyncio streams and its h11 state machine."""

    __slots__ = ("h11", "idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
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


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    t = request.extensions.get("timeout") or {}
    return {k: t.get(k) for k in ("connect", "read", "write", "pool")}


class _Body(httpx.AsyncByteStream):
    """The response body, read from the connection as it is iterated. Closing it hands
    the connection back to the pool when the exchange ended cleanly, else closes it."""

    def __init__(
        self, transport: KeepAliveTransport, origin: _Origin, conn: _Conn, read: float | None
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Conn | None = conn
        self._read = read
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None or self._done:
            return
        while True:
            event = await self._transport._next_event(conn, self._read)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                return
            else:  # ConnectionClosed before the end of the body
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._transport._release(self._origin, conn, reuse=self._done)


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

    # ---- the exchange ---------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
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
        t = _timeouts(request)
        try:
            async with asyncio.timeout(t["pool"]):
                await origin.slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection within the pool timeout") from None
        conn: _Conn | None = None
        try:
            conn = await self._checkout(origin, key, t["connect"])
            status, headers = await self._exchange(conn, request, t)
        except BaseException:
            if conn is not None:
                conn.close()
            origin.slots.release()
            raise
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(self, origin, conn, t["read"]),
            extensions={"http_version": b"HTTP/1.1"},
        )

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
                    host, port, ssl=ctx, server_hostname=host if ctx else None, limit=_READ_SIZE
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connecting to {host}:{port}: {exc}") from None
        return _Conn(reader, writer)

    async def _exchange(
        self, conn: _Conn, request: httpx.Request, t: dict[str, float | None]
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Write the request, read up to the response head. From the first byte written on,
        nothing here is retried: the server may have acted on the request."""
        h = conn.h11
        try:
            out = [
                h.send(
                    h11.Request(
                        method=request.method,
                        target=request.url.raw_path,
                        headers=request.headers.raw,
                    )
                )
            ]
            async for chunk in request.stream:  # type: ignore[union-attr]
                if chunk:
                    out.append(h.send(h11.Data(data=chunk)))
            out.append(h.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from None
        try:
            async with asyncio.timeout(t["write"]):
                conn.writer.write(b"".join(x for x in out if x))
                await conn.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("writing the request timed out") from None
        except OSError as exc:
            raise httpx.WriteError(f"writing the request: {exc}") from None
        while True:
            event = await self._next_event(conn, t["read"])
            if isinstance(event, h11.Response):
                return event.status_code, list(event.headers)
            if isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            # an InformationalResponse (1xx): keep reading

    async def _next_event(self, conn: _Conn, read: float | None) -> Any:
        h = conn.h11
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None
            if event is not h11.NEED_DATA:
                return event
            try:
                async with asyncio.timeout(read):
                    data = await conn.reader.read(_READ_SIZE)
            except TimeoutError:
                raise httpx.ReadTimeout("reading the response timed out") from None
            except OSError as exc:
                raise httpx.ReadError(f"reading the response: {exc}") from None
            try:
                h.receive_data(data)
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None

    def _release(self, origin: _Origin, conn: _Conn, *, reuse: bool) -> None:
        h = conn.h11
        if reuse and not self._closed and h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
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
