"""Helpers for testing code built on ilinkbot (shipped, like ``structlog.testing``).

- :func:`no_real_waiting`: every retry/back-off pause returns at once.
- :func:`sandbox_login`: log a bot in against an :class:`ilink.sandbox.Sandbox` without a
  terminal, and store its credentials.
- :func:`capture_logs`: structlog's log capture, re-exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from ilinkbot.ilink import IlinkClient
from structlog.testing import capture_logs

from .waiting import real_waiting, set_real_waiting

__all__ = ["capture_logs", "no_real_waiting", "sandbox_login"]


@contextmanager
def no_real_waiting() -> Iterator[None]:
    previous = real_waiting()
    set_real_waiting(False)
    try:
        yield
    finally:
        set_real_waiting(previous)


async def sandbox_login(
    sandbox: Any,
    store: Any,
    *,
    owner: str = "owner@im.wechat",
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Any:
    """Scan and confirm a fresh QR code in ``sandbox`` and save the account in ``store``.

    Over real HTTP pass the server's ``base_url``; in-process the sandbox's transport is
    used. Returns the stored account."""
    base = base_url or sandbox.api_base
    http = httpx.AsyncClient(transport=transport or (None if base_url else sandbox.transport()))
    try:
        client = IlinkClient(base, None, http=http)
        qr = await client.get_bot_qrcode(store.local_tokens())
        sandbox.scan(qr.qrcode)
        sandbox.confirm(owner, qr.qrcode)
        status = await client.get_qrcode_status(qr.qrcode)
        if status.status != "confirmed" or not status.ilink_bot_id or not status.bot_token:
            raise RuntimeError(f"sandbox login ended with {status.status!r}")
        return store.save_account(
            status.ilink_bot_id,
            token=status.bot_token,
            base_url=status.baseurl or base,
            owner_user_id=status.ilink_user_id or owner,
        )
    finally:
        await http.aclose()
