"""Real HTTP serving of a :class:`~ilink.sandbox.Sandbox` (asyncio + h11, own thread).

Two listening sockets: the main one (API, CDN under ``/c2c``, admin under
``/_sandbox``) and a second one standing for the other IDC of ``scaned_but_redirect``.
A connection-reset fault closes the socket with ``SO_LINGER 0`` so the peer gets an RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import struct
import sys
import threading
from http import HTTPStatus
from types import FrameType, TracebackType
from typing import Any

import h11

from ilinkbot.ilink.log import get_logger

from .core import Sandbox
from .model import SandboxRequest, SandboxResponse

__all__ = ["SandboxServer", "run_server"]

log = get_logger("ilink.sandbox.server")

_REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/1\.[01]\r?\n")
_READ_SIZE = 65536


class SandboxServer:
    """Serve ``sandbox`` on ``host:port`` (0 = any free port) from a background thread.

    ``body_timeout``: how long a request body may stall before it counts as shorter
    than its ``Content-Length`` (a violation).
    """

    def __init__(
        self,
        sandbox: Sandbox,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        redirect_port: int = 0,
        body_timeout: float = 5.0,
    ) -> None:
        self.sandbox = sandbox
        self.host = host
        self._want_port = port
        self._want_redirect_port = redirect_port
        self.body_timeout = body_timeout
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0
        self.redirect_port = 0
        self._saved_bases: tuple[str, str, str] | None = None

    # ------------------------------------------------------------------ URLs

    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``: the API base (also the ``baseurl`` given on confirm)."""
        return f"http://{self._url_host()}:{self.port}"

    @property
    def cdn_base_url(self) -> str:
        return self.base_url + "/c2c"

    @property
    def admin_url(self) -> str:
        return self.base_url + "/_sandbox"

    @property
    def redirect_host(self) -> str:
        """``HOST:PORT2`` of the second listening socket (``redirect_host`` on the wire)."""
        return f"{self._url_host()}:{self.redirect_port}"

    @property
    def redirect_base_url(self) -> str:
        return f"http://{self.redirect_host}"

    # ------------------------------------------------------------------ life cycle

    def start(self) -> SandboxServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="ilink-sandbox", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        sb = self.sandbox
        self._saved_bases = (sb.api_base, sb.cdn_base, sb.redirect_host)
        sb.set_bases(self.base_url, self.cdn_base_url, self.redirect_host)
        log.info("sandbox.server.started", base_url=self.base_url, redirect=self.redirect_host)
        return self

    def stop(self) -> None:
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout=10)
        self._thread = None
        if self._saved_bases is not None:
            self.sandbox.set_bases(*self._saved_bases)
            self._saved_bases = None
        log.info("sandbox.server.stopped", base_url=self.base_url)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # pragma: no cover - reported to start()
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.error("sandbox.server.crashed", error=exc)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            main = await asyncio.start_server(
                lambda r, w: self._client(r, w, False), self.host, self._want_port
            )
            second = await asyncio.start_server(
                lambda r, w: self._client(r, w, True), self.host, self._want_redirect_port
            )
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self.port = main.sockets[0].getsockname()[1]
        self.redirect_port = second.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            main.close()
            second.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await main.wait_closed()
            await second.wait_closed()

    # ------------------------------------------------------------------ connections

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, via_redirect: bool
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._serve_one(conn, reader, writer, via_redirect):
                conn.start_next_cycle()
        except (ConnectionError, h11.LocalProtocolError, asyncio.CancelledError):
            pass
        except h11.RemoteProtocolError as exc:
            with contextlib.suppress(Exception):
                await self._write(conn, writer, SandboxResponse.text(str(exc), 400), close=True)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _next_event(
        self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float | None
    ) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if timeout is None:
                data = await reader.read(_READ_SIZE)
            else:
                data = await asyncio.wait_for(reader.read(_READ_SIZE), timeout)
            conn.receive_data(data)

    async def _serve_one(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        via_redirect: bool,
    ) -> bool:
        """Serve one request; False when the connection must end."""
        event = await self._next_event(conn, reader, None)
        if not isinstance(event, h11.Request):
            return False
        body = bytearray()
        framing_error: str | None = None
        while True:
            try:
                part = await self._next_event(conn, reader, self.body_timeout)
            except TimeoutError:
                framing_error = "request body is shorter than its Content-Length"
                break
            if isinstance(part, h11.Data):
                body += part.data
            elif isinstance(part, h11.EndOfMessage):
                break
            else:  # ConnectionClosed mid-body
                return False
        trailing, _closed = conn.trailing_data
        if framing_error is None and trailing and not _REQUEST_LINE.match(trailing):
            framing_error = "request body is longer than its Content-Length"
        request = SandboxRequest(
            method=event.method.decode("ascii"),
            target=event.target.decode("ascii", "replace"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers],
            body=bytes(body),
            via_redirect=via_redirect,
            framing_error=framing_error,
        )
        try:
            response = await self.sandbox.handle(request)
        except Exception as exc:  # a sandbox bug must not hang the client
            log.exception("sandbox.server.handler_failed", error=exc)
            response = SandboxResponse.text(f"sandbox error: {exc!r}", 500)
        if response.reset:
            self._abort(writer)
            return False
        close = framing_error is not None
        await self._write(conn, writer, response, close=close)
        return not close and conn.our_state is h11.DONE and conn.their_state is h11.DONE

    @staticmethod
    async def _write(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: SandboxResponse,
        *,
        close: bool,
    ) -> None:
        headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(response.body))))
        if close:
            headers.append(("Connection", "close"))
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        writer.write(
            conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
            or b""
        )
        if response.body:
            writer.write(conn.send(h11.Data(data=response.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    @staticmethod
    def _abort(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


def run_server(host: str = "127.0.0.1", port: int = 8780, **sandbox_kwargs: Any) -> None:
    """Serve a new :class:`Sandbox` until SIGINT/SIGTERM; print the URLs first.

    ``sandbox_kwargs`` go to :class:`Sandbox` (``quota``, ``window_seconds``,
    ``longpoll_seconds``, ``qr_poll_seconds``) except ``redirect_port`` and
    ``body_timeout``, which go to :class:`SandboxServer`.
    """
    server_kwargs = {
        k: sandbox_kwargs.pop(k) for k in ("redirect_port", "body_timeout") if k in sandbox_kwargs
    }
    sandbox = Sandbox(**sandbox_kwargs)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        with SandboxServer(sandbox, host, port, **server_kwargs) as srv:
            print(f"ilink sandbox API base: {srv.base_url}", flush=True)
            print(f"ilink sandbox CDN base: {srv.cdn_base_url}", flush=True)
            print(f"ilink sandbox admin: {srv.admin_url}/state", flush=True)
            print(f"ilink sandbox redirect host: {srv.redirect_host}", flush=True)
            while not stop.wait(0.2):
                pass
            print("ilink sandbox stopping", file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
