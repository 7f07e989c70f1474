"""``Pacer``: at most so many messages a second from one account, when a push fans out.

Users of the official client report ``ret=-2`` "rate limited" on bursts, and longer penalties
when a client keeps retrying. A fan-out (one push to many users) therefore waits for a token
per message: ``fanout_per_second`` of them a second, in bursts of at most that many. A
``ret=-2`` is never retried in a loop: the message is held (see the outbox).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["Pacer"]


class Pacer:
    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.per_second = float(per_second)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.per_second  # a full second's burst to start with
        self._last = clock()
        self._lock = asyncio.Lock()

    async def take(self, count: int = 1) -> None:
        """Wait until ``count`` messages may go (one at a time if ``count`` exceeds a burst)."""
        async with self._lock:  # first come, first served
            for _ in range(count):
                now = self._clock()
                self._tokens = min(
                    self.per_second, self._tokens + (now - self._last) * self.per_second
                )
                self._last = now
                if self._tokens < 1:
                    await self._sleep((1 - self._tokens) / self.per_second)
                    self._tokens, self._last = 1.0, self._clock()
                self._tokens -= 1
