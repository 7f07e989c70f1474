"""`ilinkbot mcp --http`: streamable HTTP behind the token of `serve`, via the SDK's client."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from ilinkbot.ilink.sandbox import Sandbox
from tests.bot.mcp.conftest import SERVER_ARGS, call
from tests.processes import OWNER, ROOT, wait_until

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mcp_url(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "mcp.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, *SERVER_ARGS, "--http", f"127.0.0.1:{port}"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        text = lambda: (tmp_path / "mcp.log").read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "listening on" in text() or proc.poll() is not None, 20, "mcp --http")
        assert proc.poll() is None, text()
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@asynccontextmanager
async def http_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def test_http_needs_the_serve_token(mcp_url: str, home: Path) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(mcp_url, json=body, headers=headers)
        assert r.status_code == 401, r.text
        assert "token" in r.json()["error"]
    assert (home / "serve-token").stat().st_mode & 0o777 == 0o600


async def test_http_bind_push_answer_wait_reply(sb: Sandbox, mcp_url: str, home: Path) -> None:
    token = (home / "serve-token").read_text().strip()
    async with http_session(mcp_url, token) as session:
        qr = await call(session, "wechat_login_start")
        sb.scan(qr["qrcode"])
        sb.confirm(OWNER, qr["qrcode"])
        done = await call(session, "wechat_login_check", qrcode=qr["qrcode"])
        assert done["status"] == "confirmed" and done["owner"] == OWNER

        sb.user_says(OWNER, "ping")
        sent = await call(session, "send_to_wechat", text="Which option, A or B?")
        assert sent["state"] == "delivered"
        waiting = asyncio.create_task(call(session, "wechat_wait_reply", timeout_seconds=20))
        await asyncio.sleep(1.0)
        sb.user_says(OWNER, "B")
        reply = await asyncio.wait_for(waiting, 20)
        assert [m["text"] for m in reply["messages"]] == ["B"]
