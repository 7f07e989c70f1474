"""A minimal ilink-shaped HTTP/1.1 server that answers every POST at once.

    python bench/responder.py [--port 0]     # prints "responder listening on http://..."

It reads each request (headers, then ``Content-Length`` bytes of body), keeps the connection
alive, and answers ``{"ret":0,"message_id":N}``, so a benchmark against it measures the
client, not the server. It runs in its own process (its own GIL). ``GET /count`` returns how
many POSTs it has answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys


class _Conn(asyncio.Protocol):
    answered = 0

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            self._answer(head[0])

    def _answer(self, request_line: str) -> None:
        assert self.transport is not None
        if request_line.startswith("GET /count"):
            body = json.dumps({"answered": _Conn.answered}).encode()
        else:
            _Conn.answered += 1
            body = b'{"ret":0,"message_id":%d}' % (7_000_000 + _Conn.answered)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Conn, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"responder listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
