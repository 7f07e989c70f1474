"""Fixtures of the MCP tests: a sandbox over real HTTP, and `ilinkbot mcp` driven by the
MCP SDK's own client (stdio subprocess or streamable HTTP)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from tests.processes import ROOT, env_for

pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters, stdio_client

SERVER_ARGS = ["-m", "ilinkbot.bot.cli", "mcp"]


class ToolFailed(Exception):
    """The tool answered with an MCP tool error (``is_error``); the message is its text."""


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(longpoll_seconds=0.5, qr_poll_seconds=0.3)
    with SandboxServer(sb) as srv:
        yield sb, srv


@pytest.fixture
def sb(sandbox: tuple[Sandbox, SandboxServer]) -> Sandbox:
    return sandbox[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def env(sandbox: tuple[Sandbox, SandboxServer], home: Path) -> dict[str, str]:
    return env_for(home, sandbox[1])


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call ``tool``; its structured result, or :class:`ToolFailed` with the error text."""
    result = await session.call_tool(tool, arguments)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        raise ToolFailed(text)
    assert isinstance(result.structured_content, dict), text
    assert json.loads(text) == result.structured_content  # the text twin says the same
    return result.structured_content


@asynccontextmanager
async def stdio_session(env: dict[str, str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=SERVER_ARGS, env=env, cwd=ROOT)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session
