"""Fixtures of the serve tests: a gateway over the in-process sandbox, and its client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from ilinkbot.bot.config import Config
from ilinkbot.bot.serve import Gateway, create_app
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting

TOKEN = "ilk_test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def serve_config(config: Config) -> Config:
    return replace(config, login_timeout_seconds=60)


@pytest.fixture
async def gateway(serve_config: Config, store: Store, sb: Sandbox) -> AsyncIterator[Gateway]:
    gw = Gateway(
        serve_config, token=TOKEN, store=store, transport=sb.transport(), catch_up_seconds=0.2
    )
    with no_real_waiting():
        yield gw
    await gw.aclose()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
    ) as c:
        yield c
