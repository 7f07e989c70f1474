"""Which connection pool each HTTP request of ilinkbot uses, decided in this one place.

Three pools, so that no kind of traffic waits behind another:

- ``longpoll``: getupdates and the QR status long-poll. Each polling account holds one
  connection for up to ~35 s, so this pool has no connection limit; it is
  :class:`KeepAliveTransport` too, whose cost per request does not grow with the number of
  connections (httpx's default pool scans all of them on every request and every response
  close: at 1,000 polling accounts that was most of the process's CPU).
- ``api``: sendmessage and the other short API calls, on :class:`KeepAliveTransport`
  (persistent connections, the least work per request). A send never waits behind a poll.
- everything untagged, i.e. CDN uploads and downloads: httpx's default transport with a
  bounded pool, so a burst of large transfers cannot take the API's connections either.

:class:`~ilink.client.IlinkClient` tags its requests with the ``POOL`` request extension;
:func:`http_client` builds the ``httpx.AsyncClient`` that routes by it.
"""

from __future__ import annotations

import httpx

from .transport import KeepAliveTransport

__all__ = ["API", "LONGPOLL", "POOL", "IlinkHttp", "PoolRouter", "http_client"]

#: The request extension naming the pool, and its values.
POOL = "ilinkbot_pool"
LONGPOLL = "longpoll"
API = "api"

# Per origin: sends of every account go to the same host.
API_CONNECTIONS = 64
TRANSFER_LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=20)


class PoolRouter(httpx.AsyncBaseTransport):
    """Hands each request to the transport of its pool (untagged: ``transfer``)."""

    def __init__(
        self,
        *,
        longpoll: httpx.AsyncBaseTransport,
        api: httpx.AsyncBaseTransport,
        transfer: httpx.AsyncBaseTransport,
    ) -> None:
        self._pools = {LONGPOLL: longpoll, API: api}
        self._transfer = transfer

    def for_pool(self, pool: str) -> httpx.AsyncBaseTransport:
        """The transport of ``pool`` (an unknown name: the transfer pool's)."""
        return self._pools.get(pool, self._transfer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.for_pool(request.extensions.get(POOL, "")).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (*self._pools.values(), self._transfer):
            await transport.aclose()


class IlinkHttp(httpx.AsyncClient):
    """The ``httpx.AsyncClient`` of ilinkbot, which also knows its transport.

    :meth:`send_bytes` takes an ilink API call straight to the transport of its pool. Such a
    call needs nothing of what ``AsyncClient.send`` adds (URL merging, default headers,
    cookies, auth and redirect flows, event hooks), and on :class:`KeepAliveTransport` not
    even httpx's ``Request`` and ``Response`` objects: together about half of a
    sendmessage's client-side time (``docs/benchmarks.md``, figure ``official``). An injected
    transport (the sandbox, a ``MockTransport``) gets an ordinary ``httpx.Request``.
    Everything else (CDN transfers, users' own code) uses the client as any httpx client."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(transport=transport)
        self.transport = transport

    async def send_bytes(
        self,
        pool: str,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        body: bytes,
        timeout: float | None,
    ) -> tuple[int, bytes]:
        """``(status, body)`` of one request; httpx's exceptions as they are."""
        transport = self.transport
        if isinstance(transport, PoolRouter):
            transport = transport.for_pool(pool)
        t = httpx.Timeout(timeout).as_dict()
        if isinstance(transport, KeepAliveTransport):
            raw = [(k.encode("ascii"), v.encode("ascii")) for k, v in headers.items()]
            return await transport.request_bytes(method, url, raw, body, t)
        request = httpx.Request(
            method, url, headers=headers, content=body, extensions={"timeout": t, POOL: pool}
        )
        response = await transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response.status_code, response.content


def http_client(transport: httpx.AsyncBaseTransport | None = None) -> IlinkHttp:
    """The HTTP client for ilink and its CDN. An injected ``transport`` (tests, the sandbox
    in-process) carries every request, whatever its pool."""
    if transport is None:
        transport = PoolRouter(
            longpoll=KeepAliveTransport(max_connections=None),
            api=KeepAliveTransport(max_connections=API_CONNECTIONS),
            transfer=httpx.AsyncHTTPTransport(limits=TRANSFER_LIMITS),
        )
    return IlinkHttp(transport)
