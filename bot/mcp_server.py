"""``ilinkbot mcp``: the agent tools of :mod:`bot.agent_tools` as a Model Context Protocol
server (the official SDK, ``pip install 'ilinkbot[mcp]'``), over stdio or streamable HTTP.

Only ``ilinkbot mcp`` imports this module: the SDK is heavy, and a cron ``send`` must
not pay for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .agent_tools import MAX_WAIT_SECONDS, AgentError, AgentTools
from .serve.auth import request_token, token_matches

__all__ = ["TOOL_NAMES", "build_server", "http_app", "run_http", "run_stdio"]

TOOL_NAMES = (
    "wechat_status",
    "wechat_login_start",
    "wechat_login_check",
    "wechat_disconnect",
    "send_to_wechat",
    "wechat_wait_reply",
    "wechat_recent_messages",
)

_INSTRUCTIONS = (
    "WeChat through ilinkbot. Check wechat_status first. To bind WeChat: wechat_login_start, "
    "show the QR image to the user, wait until they say they scanned and confirmed, then "
    "call wechat_login_check once (never in a loop). Push with send_to_wechat; for an "
    "answer, call wechat_wait_reply after the push. wechat_disconnect only when the user "
    "asked for it."
)


async def _guard(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Bad input becomes a tool error with a one-line message, never a crash."""
    try:
        return await call
    except AgentError as exc:
        raise ToolError(str(exc)) from None


def build_server(tools: AgentTools) -> MCPServer:
    """An MCP server whose tools call ``tools`` (results are structured JSON)."""
    server: MCPServer = MCPServer("ilinkbot", instructions=_INSTRUCTIONS, log_level="WARNING")

    @server.tool(name="wechat_status")
    async def wechat_status() -> dict[str, Any]:
        """Whether WeChat is bound (and ever was): every account with its state and owner,
        and per user the reply window left (messages and seconds) and held messages."""
        return await _guard(tools.status())

    @server.tool(name="wechat_login_start")
    async def wechat_login_start() -> dict[str, Any]:
        """Make a fresh login QR code: returns its `qrcode` id, the PNG path, the URL and
        the expiry. Show it to the user; nothing polls it."""
        return await _guard(tools.login_start())

    @server.tool(name="wechat_login_check")
    async def wechat_login_check(
        qrcode: Annotated[str, Field(description="the id wechat_login_start returned")],
        verify_code: Annotated[
            str | None, Field(description="the number the phone shows, when it shows one")
        ] = None,
    ) -> dict[str, Any]:
        """Check the QR code once. On `confirmed` the binding is stored (a reconnect when
        this WeChat user was bound before) and the account and owner are returned."""
        return await _guard(tools.login_check(qrcode, verify_code))

    @server.tool(name="wechat_disconnect")
    async def wechat_disconnect(
        account: Annotated[str, Field(description="the account id, from wechat_status")],
        confirm: Annotated[
            bool, Field(description="true only after the user agreed to disconnect")
        ] = False,
    ) -> dict[str, Any]:
        """Disconnect (log out) an account; messages and users are kept. Destructive:
        refused unless `confirm` is true."""
        return await _guard(tools.disconnect(account, confirm))

    @server.tool(name="send_to_wechat")
    async def send_to_wechat(
        text: Annotated[str | None, Field(description="the message text")] = None,
        to: Annotated[str | None, Field(description="user id or alias; default: the owner")] = None,
        title: Annotated[str | None, Field(description="a first line, set apart")] = None,
        image_path: Annotated[str | None, Field(description="an image file to send")] = None,
        file_path: Annotated[str | None, Field(description="a file to send")] = None,
        account: Annotated[
            str | None, Field(description="the account, when several are bound")
        ] = None,
    ) -> dict[str, Any]:
        """Push to WeChat. `state`: `delivered` (with message ids), `held` (goes out when
        the user next writes), `unconfirmed`, or `failed` (with `reason`); `window`: the
        reply window left per user after it."""
        return await _guard(
            tools.send(
                text,
                to=to,
                title=title,
                image_path=image_path,
                file_path=file_path,
                account=account,
            )
        )

    @server.tool(name="wechat_wait_reply")
    async def wechat_wait_reply(
        to: Annotated[str | None, Field(description="user id or alias; default: the owner")] = None,
        timeout_seconds: Annotated[
            float, Field(gt=0, le=MAX_WAIT_SECONDS, description="how long to wait")
        ] = 300.0,
        account: Annotated[str | None, Field(description="the account")] = None,
    ) -> dict[str, Any]:
        """Wait for the next message the user writes after this call: `status` `replied`
        with the messages (oldest first), or `timeout`."""
        return await _guard(tools.wait_reply(to, timeout_seconds, account))

    @server.tool(name="wechat_recent_messages")
    async def wechat_recent_messages(
        to: Annotated[
            str | None, Field(description="only this user (id or alias); default: all")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="at most this many")] = 10,
        account: Annotated[str | None, Field(description="the account")] = None,
    ) -> dict[str, Any]:
        """What users wrote to the bot, newest first."""
        return await _guard(tools.recent_messages(to, limit, account))

    return server


async def run_stdio(tools: AgentTools) -> None:
    try:
        await build_server(tools).run_stdio_async()
    finally:
        await tools.aclose()


class _RequireToken:
    """Every request needs the token of ``ilinkbot serve`` (401 otherwise)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            given = request_token(
                request.headers.get("authorization"), request.query_params.get("auth")
            )
            if not any(token_matches(t, self.token) for t in given):
                response = JSONResponse(
                    {"ok": False, "error": "missing or wrong token (Authorization: Bearer)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(tools: AgentTools, token: str, host: str) -> ASGIApp:
    """The streamable HTTP app at ``/mcp``, behind the bearer token."""
    inner = build_server(tools).streamable_http_app(host=host)
    return _RequireToken(inner, token)


async def run_http(
    tools: AgentTools,
    token: str,
    sock: Any,
    host: str,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve on the listening socket ``sock`` until cancelled."""
    import uvicorn

    config = uvicorn.Config(http_app(tools, token, host), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            if on_ready is not None:
                while not server.started:
                    await anyio.sleep(0.05)
                on_ready()
    finally:
        await tools.aclose()
