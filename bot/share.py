"""``LeaseShare``: how many accounts this process may poll when several share one store.

Every running receive loop heartbeats in the store (``Store.heartbeat_worker``). With A active
accounts and W live workers, each polls at most ceil(A / W): a worker that joins finds the
others over their share, they let go of the excess, and it takes those; when a worker dies its
heartbeat and its leases run out, the share of the others grows, and they take its accounts.
"""

from __future__ import annotations

import math

__all__ = ["LeaseShare"]


class LeaseShare:
    def __init__(self) -> None:
        #: The most accounts this process may poll; None: no limit known yet.
        self.limit: int | None = None
        self._holding: set[str] = set()

    def update(self, accounts: int, workers: int) -> None:
        self.limit = math.ceil(accounts / max(1, workers)) if accounts else 0

    def try_take(self, bot_id: str) -> bool:
        """Reserve a place for ``bot_id`` before taking its lease; False when at the limit."""
        if bot_id in self._holding:
            return True
        if self.limit is not None and len(self._holding) >= self.limit:
            return False
        self._holding.add(bot_id)
        return True

    def give_back(self, bot_id: str) -> None:
        self._holding.discard(bot_id)

    @property
    def room(self) -> int:
        """How many more accounts this process may take now."""
        if self.limit is None:
            return len(self._holding) + 1  # no limit known yet: always some
        return max(0, self.limit - len(self._holding))
