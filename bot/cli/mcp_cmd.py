"""``ilinkbot mcp``: a Model Context Protocol server for agents (stdio, or HTTP + token)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from typing import Any

from ..exitcodes import Exit
from .common import App

__all__ = ["INSTALL_HINT", "register"]

INSTALL_HINT = "pip install 'ilinkbot[mcp]'"


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mcp",
        parents=[common],
        help="serve the WeChat tools to agents over the Model Context Protocol",
        description=(
            "An MCP server with the tools wechat_status, wechat_login_start, "
            "wechat_login_check, wechat_disconnect, send_to_wechat, wechat_wait_reply and "
            "wechat_recent_messages. Speaks stdio unless --http is given; over HTTP every "
            "request needs the token of `ilinkbot serve --show-token`. "
            f"Needs the MCP SDK: {INSTALL_HINT}"
        ),
    )
    p.add_argument(
        "--http",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio",
    )
    p.set_defaults(func=cmd_mcp)


def cmd_mcp(app: App) -> int:
    try:
        from ..mcp_server import run_http, run_stdio
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "mcp":
            raise
        app.fail(f"the MCP server needs the MCP SDK: {INSTALL_HINT}", Exit.USAGE)
    from ..agent_tools import AgentTools

    tools = AgentTools(app.config)
    if app.args.http is None:
        asyncio.run(run_stdio(tools))
        return int(Exit.OK)

    from ..serve.auth import load_or_create_token, token_path

    host, port = app.args.http
    token, created = load_or_create_token(app.config.home)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        asyncio.run(tools.aclose())
        app.fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", Exit.ERROR)
    bound = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}/mcp"

    def ready() -> None:
        app.say(f"ilinkbot mcp: listening on {url}")
        if host not in ("127.0.0.1", "localhost", "::1"):
            app.say(
                f"  warning: {host} is not loopback: anyone who can reach it and knows the "
                "token can push; put it behind TLS (a reverse proxy)"
            )
        app.say(
            f"  token: `ilinkbot serve --show-token` ({token_path(app.config.home)})"
            + (", made now" if created else "")
        )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_http(tools, token, sock, host, on_ready=ready))
    return int(Exit.OK)
