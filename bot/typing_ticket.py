"""Typing tickets (``getconfig``), cached per account and user as the official client does.

A fetched ticket is kept until a random moment within 24 hours, so the refreshes of many
users spread out instead of all falling due together. A failed fetch (an error, or an
answer without ``ret == 0``, which :meth:`IlinkClient.get_config` reports as an error)
keeps the ticket held so far, "" if none, and is retried after 2 s, then 4 s, 8 s, ...
doubling up to 1 hour; a success resets the back-off.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from ilinkbot.ilink import IlinkError
from ilinkbot.ilink.log import get_logger

from .scheduler import Clock

__all__ = ["REFRESH_WITHIN_SECONDS", "RETRY_FIRST_SECONDS", "RETRY_MAX_SECONDS", "TypingTickets"]

REFRESH_WITHIN_SECONDS = 24 * 3600.0
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 3600.0

_log = get_logger("ilinkbot.typing")


@dataclass
class _Entry:
    ticket: str
    next_fetch_at: float
    failures: int = 0


class TypingTickets:
    """The ticket cache, timed by ``clock`` (the bot's, so tests control it) or, without
    one, by the monotonic clock."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}

    def _now(self) -> float:
        return self._clock.now().timestamp() if self._clock is not None else time.monotonic()

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[str]]) -> str:
        """The ticket for ``key``, calling ``fetch`` only when a refresh or retry is due."""
        entry = self._entries.get(key)
        if entry is not None and self._now() < entry.next_fetch_at:
            return entry.ticket
        try:
            ticket = await fetch()
        except IlinkError as exc:
            failures = entry.failures + 1 if entry else 1
            delay = min(RETRY_FIRST_SECONDS * 2 ** min(failures - 1, 11), RETRY_MAX_SECONDS)
            _log.debug("getconfig_failed", error=str(exc), retry_in=delay)
            held = entry.ticket if entry else ""
            self._entries[key] = _Entry(held, self._now() + delay, failures)
            return held
        # random.random() looked up per call, so a test can pin it.
        due = self._now() + random.random() * REFRESH_WITHIN_SECONDS
        self._entries[key] = _Entry(ticket, due)
        return ticket
