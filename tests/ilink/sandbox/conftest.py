"""Fixtures for the sandbox tests: a fast sandbox, in-process and real-HTTP clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer

from .helpers import Api


@pytest.fixture
def sb() -> Sandbox:
    return Sandbox(longpoll_seconds=0.3, qr_poll_seconds=0.3)


@pytest.fixture
async def api(sb: Sandbox) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(transport=sb.transport()) as client:
        yield Api(client, sb.api_base, sb)


@pytest.fixture
def server(sb: Sandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sb, body_timeout=0.5) as srv:
        yield srv


@pytest.fixture
async def http_api(sb: Sandbox, server: SandboxServer) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield Api(client, server.base_url, sb)
