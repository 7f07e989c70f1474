"""Fixtures shared by the bot-level tests: a strict sandbox, a store, a service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from ilinkbot.bot.config import Config
from ilinkbot.bot.service import Service
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import no_real_waiting, sandbox_login

OWNER = "owner@im.wechat"


@pytest.fixture(autouse=True)
def _library_logging() -> Iterator[None]:
    """Each test starts with the logging set-up the one before it found: structlog's
    configuration is process-wide, and ``main`` or ``configure_logging`` in one test
    would otherwise send the next test's logs to a stream that test never sees."""
    saved = structlog.get_config() if structlog.is_configured() else None
    yield
    structlog.reset_defaults()
    if saved is not None:
        structlog.configure(**saved)


@pytest.fixture
def sb() -> Sandbox:
    """A sandbox with the real server's rules but short long-polls."""
    return Sandbox(longpoll_seconds=0.3, qr_poll_seconds=0.3)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def config(sb: Sandbox, home: Path) -> Config:
    return Config(home=home, base_url=sb.api_base, cdn_base_url=sb.cdn_base)


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    st = Store.open(None, home=home)
    yield st
    st.close()


@pytest.fixture
async def svc(config: Config, store: Store, sb: Sandbox) -> AsyncIterator[Service]:
    service = Service(config, store=store, transport=sb.transport())
    with no_real_waiting():
        yield service
    await service.aclose()


@pytest.fixture
async def account(sb: Sandbox, store: Store) -> object:
    return await sandbox_login(sb, store, owner=OWNER)
