"""KeepAliveTransport against a scripted HTTP/1.1 server on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest

from ilinkbot.ilink import IlinkClient, RequestTimeout, TransportError
from ilinkbot.ilink.transport import KeepAliveTransport

# What the server does with one request: answer it (status, headers, body chunks), or
# return None after doing something else (hang, drop the connection).
Handler = Callable[[h11.Request, bytes, asyncio.StreamWriter], Awaitable[Any]]


class Server:
    """Counts connections and requests; ``handler`` decides each answer."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # the client closed
                        return
                assert request is not None
                self.requests.append(body)
                answer = await self.handler(request, body, writer)
                if answer is None:
                    return
                status, headers, chunks = answer
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
                for chunk in chunks:
                    writer.write(conn.send(h11.Data(data=chunk)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()


async def ok(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
    reply = b'{"ret":0,"message_id":1,"echo":' + str(len(body)).encode() + b"}"
    return 200, [("Content-Length", str(len(reply)))], [reply]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[Server, str]]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[Server, str]:
        srv = Server(handler)
        server = await asyncio.start_server(srv.serve, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return srv, f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()


async def test_sequential_requests_reuse_one_connection(serve: Any) -> None:
    srv, url = await serve(ok)
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        for i in range(5):
            r = await http.post(url + "/x", content=b"a" * i)
            assert r.status_code == 200 and r.json()["echo"] == i
    assert srv.connections == 1 and len(srv.requests) == 5


async def test_requests_in_flight_share_a_bounded_set_of_connections(serve: Any) -> None:
    async def slow(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        await asyncio.sleep(0.02)
        return await ok(request, body, writer)

    srv, url = await serve(slow)
    async with httpx.AsyncClient(transport=KeepAliveTransport(max_connections=3)) as http:
        rs = await asyncio.gather(*(http.post(url, content=b"x") for _ in range(20)))
    assert all(r.status_code == 200 for r in rs)
    assert srv.connections == 3 and len(srv.requests) == 20


async def test_a_post_the_server_dropped_is_surfaced_not_sent_again(serve: Any) -> None:
    async def drop(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        return None  # got the request, closes without answering

    srv, url = await serve(drop)
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(url, content=b"once")
        client = IlinkClient(url, "t", http=http)
        with pytest.raises(TransportError):
            await client.send_text("u@im.wechat", "hi", context_token="c")
    assert srv.requests[0] == b"once" and len(srv.requests) == 2  # one of each, no re-send


async def test_an_idle_connection_the_server_closed_is_not_reused(serve: Any) -> None:
    async def once(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        # answers, then closes the connection as servers do after a keep-alive timeout
        reply = b'{"ret":0}'
        asyncio.get_running_loop().call_later(0.05, writer.close)
        return 200, [("Content-Length", str(len(reply)))], [reply]

    srv, url = await serve(once)
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        assert (await http.post(url, content=b"1")).status_code == 200
        await asyncio.sleep(0.2)
        assert (await http.post(url, content=b"2")).status_code == 200
    assert srv.requests == [b"1", b"2"] and srv.connections == 2


async def test_connection_close_in_the_answer_is_honoured(serve: Any) -> None:
    async def closing(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        return 200, [("Content-Length", "2"), ("Connection", "close")], [b"ok"]

    srv, url = await serve(closing)
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        for _ in range(3):
            assert (await http.get(url)).text == "ok"
    assert srv.connections == 3


async def test_chunked_and_large_bodies_arrive_intact(serve: Any) -> None:
    big = bytes(range(256)) * 20_000  # 5 MB

    async def chunked(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        assert body == big
        return (
            200,
            [("Transfer-Encoding", "chunked")],
            [big[i : i + 70_000] for i in range(0, len(big), 70_000)],
        )

    srv, url = await serve(chunked)
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        for _ in range(2):
            r = await http.post(url, content=big)
            assert r.content == big

        # a streamed request body (no length known): sent chunked
        async def gen() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 1 << 20):
                yield big[i : i + (1 << 20)]

        assert (await http.post(url, content=gen())).content == big
    assert srv.connections == 1


async def test_timeouts_are_httpx_timeouts(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ilinkbot.ilink.client.LIGHT_TIMEOUT", 0.2)

    async def hang(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        await asyncio.sleep(30)

    srv, url = await serve(hang)
    async with httpx.AsyncClient(transport=KeepAliveTransport(max_connections=1)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(url, content=b"x", timeout=0.2)
        client = IlinkClient(url, "t", http=http)
        with pytest.raises(RequestTimeout):
            await client.notify_start()
    assert len(srv.requests) == 2


async def test_the_read_timeout_bounds_each_read_not_the_whole_answer(serve: Any) -> None:
    """A body that comes in pieces, each sooner than the read timeout, arrives whole, however
    long it takes in all; a body that stops for longer is a ReadTimeout (httpx's rule)."""
    pieces = [b"a" * 10] * 6

    async def trickle(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        pause = 0.1 if request.target == b"/slow-but-steady" else 1.0
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 60\r\n\r\n")
        for piece in pieces:
            await asyncio.sleep(pause)
            writer.write(piece)
            await writer.drain()
        return None

    _, url = await serve(trickle)
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        answer = await http.get(url + "/slow-but-steady", timeout=0.4)  # 0.6 s in all
        assert answer.content == b"a" * 60
        with pytest.raises(httpx.ReadTimeout):
            await http.get(url + "/stalls", timeout=0.4)


async def test_no_free_connection_is_a_pool_timeout(serve: Any) -> None:
    async def hang(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        await asyncio.sleep(30)

    _, url = await serve(hang)
    async with httpx.AsyncClient(transport=KeepAliveTransport(max_connections=1)) as http:
        first = asyncio.create_task(http.get(url, timeout=5))
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.PoolTimeout):
            await http.get(url, timeout=httpx.Timeout(5, pool=0.2))
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        # the cancelled request gave its connection slot back
        with pytest.raises(httpx.ReadTimeout):
            await http.get(url, timeout=httpx.Timeout(0.2, pool=0.2))


async def test_refused_connection_is_a_connect_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for 127.0.0.1, and a client trusting it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp / "cert.pem"))
    return server, client


async def test_https_verifies_the_server_and_keeps_the_connection(
    serve: Any, tmp_path: Path
) -> None:
    server_ctx, client_ctx = _self_signed(tmp_path)
    srv, url = await serve(ok, tls=server_ctx)
    async with httpx.AsyncClient(transport=KeepAliveTransport(ssl_context=client_ctx)) as http:
        for _ in range(3):
            assert (await http.post(url, content=b"abc")).json()["echo"] == 3
    assert srv.connections == 1
    # the default trust store does not know this certificate: refused before any byte
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(url, content=b"abc")
    assert len(srv.requests) == 3


def test_one_transport_serves_successive_event_loops() -> None:
    """``asyncio.run`` twice with one transport (a sync caller does): the second run makes
    its own connections instead of touching the first loop's."""
    import threading

    srv = Server(ok)
    server_loop = asyncio.new_event_loop()
    started = threading.Event()
    port = 0

    async def run_server() -> None:
        nonlocal port
        server = await asyncio.start_server(srv.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        started.set()
        await asyncio.sleep(3600)

    thread = threading.Thread(
        target=lambda: server_loop.run_until_complete(run_server()), daemon=True
    )
    thread.start()
    started.wait(10)
    transport = KeepAliveTransport(max_connections=1)

    async def once() -> int:
        http = httpx.AsyncClient(transport=transport)
        r = await http.post(f"http://127.0.0.1:{port}/", content=b"ab")
        return int(r.json()["echo"])

    assert asyncio.run(once()) == 2
    assert asyncio.run(once()) == 2
    assert srv.connections == 2


async def test_ilink_calls_go_out_with_one_host_and_one_exact_length(serve: Any) -> None:
    # IlinkClient on ilinkbot's own HTTP client takes the transport's byte-level path
    # (no httpx Request): the server must still see every header exactly once.
    seen: list[tuple[bytes, list[tuple[bytes, bytes]], bytes]] = []

    async def record(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> Any:
        seen.append((request.method, list(request.headers), body))
        reply = b'{"ret":0,"message_id":7}'
        return 200, [("Content-Length", str(len(reply)))], [reply]

    srv, url = await serve(record)
    from ilinkbot.ilink.pools import http_client

    http = http_client()
    try:
        client = IlinkClient(url, "t", http=http)
        ack = await client.send_text("u@im.wechat", "hi", context_token="c")
        await client.get_qrcode_status("qr-1")
    finally:
        await http.aclose()
    assert ack.message_id == "7"
    (post_method, post, post_body), (get_method, get, _) = seen
    names = [name for name, _ in post]
    assert post_method == b"POST" and len(names) == len(set(names))
    assert dict(post)[b"host"] == url.split("//")[1].encode()
    assert int(dict(post)[b"content-length"]) == len(post_body)
    assert dict(post)[b"authorization"] == b"Bearer t"
    assert get_method == b"GET" and b"content-length" not in dict(get)
    assert srv.connections == 2  # the QR status long-poll has a pool of its own
