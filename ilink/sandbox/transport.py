"""In-process httpx transport: ``httpx.AsyncClient(transport=sb.transport())``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from .model import SandboxRequest

if TYPE_CHECKING:
    from .core import Sandbox

__all__ = ["SandboxTransport"]


class SandboxTransport(httpx.AsyncBaseTransport):
    """Serve every request from a :class:`~ilink.sandbox.Sandbox`, whatever the host.

    A request to the sandbox's ``redirect_host`` counts as arriving on the second IDC.
    A connection-reset fault raises :class:`httpx.ReadError`, as a real RST would.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        ]
        netloc = request.url.netloc.decode("ascii")
        resp = await self._sandbox.handle(
            SandboxRequest(
                method=request.method,
                target=request.url.raw_path.decode("ascii"),
                headers=headers,
                body=body,
                via_redirect=netloc == self._sandbox.redirect_host,
            )
        )
        if resp.reset:
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        out_headers = [(k, v) for k, v in resp.headers if k.lower() != "content-length"]
        out_headers.append(("Content-Length", str(len(resp.body))))
        return httpx.Response(resp.status, headers=out_headers, content=resp.body, request=request)
