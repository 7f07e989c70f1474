"""The fault-injection suite's sandbox: a real HTTP server with no reply quota to get in the way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer


@pytest.fixture
def server() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(quota=1_000_000, longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv:
        yield sb, srv
