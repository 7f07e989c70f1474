"""The shared plumbing of every entry point: config, store, the HTTP client, clients.

The CLI, :func:`bot.push.send_to_wechat` and :class:`bot.app.Bot` all build one
:class:`Service`, so a push and a handler reply go through the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ilinkbot.ilink import IlinkClient
from ilinkbot.ilink.pools import http_client
from ilinkbot.store import Account, ClaimedSend, OutboxRow, Store, StoreBusy

from .accounts import mark_expired
from .config import Config
from .group_commit import GroupCommit
from .pacing import Pacer

__all__ = ["TURN_PATIENCE", "Service"]

#: How long a send waits for its turn at a user (see :meth:`Service.user_turn`) before it
#: stores its rows: most waits are one send's round trip, and end before it.
TURN_PATIENCE = 1.0


class _Turn:
    """The lock of one user's sends, and how many sends use it (it goes when none do)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _TakeTurn:
    """``async with``: one send's turn at a user (see :meth:`Service.user_turn`). A class, not
    an ``asynccontextmanager``: every send takes one, and the generator cost more than the
    lock."""

    __slots__ = ("_key", "_meanwhile", "_turn", "_turns")

    def __init__(
        self,
        turns: dict[tuple[str, str], _Turn],
        key: tuple[str, str],
        meanwhile: Callable[[], Awaitable[Any]] | None,
    ) -> None:
        self._turns = turns
        self._key = key
        self._meanwhile = meanwhile

    async def __aenter__(self) -> None:
        turn = self._turns.get(self._key)
        if turn is None:
            turn = self._turns[self._key] = _Turn()
        self._turn = turn
        turn.users += 1
        try:
            if turn.users == 1 or self._meanwhile is None:  # alone: the lock is free, no timer
                await turn.lock.acquire()
                return
            try:
                async with asyncio.timeout(TURN_PATIENCE):
                    await turn.lock.acquire()
            except TimeoutError:
                await self._meanwhile()
                await turn.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._turn.lock.release()
        self._leave()

    def _leave(self) -> None:
        self._turn.users -= 1
        if not self._turn.users:
            del self._turns[self._key]


class Service:
    """Owns the store (unless given one) and an ``httpx.AsyncClient`` (transport injectable).

    The client keeps long-polls, API calls and CDN transfers in separate pools
    (:mod:`ilink.pools`), so a send never waits behind the accounts' long-polls."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._own_store = store is None
        self.store = (
            store if store is not None else Store.open(config.database_url, home=config.home)
        )
        self.http = http_client(transport)
        self._clients: dict[str, IlinkClient] = {}
        self._pacers: dict[str, Pacer] = {}
        self._turns: dict[tuple[str, str], _Turn] = {}
        self._sqlite = self.store.dialect == "sqlite"
        # The two writes of every send, group-committed across the sends in flight.
        self.enqueue_send: GroupCommit[ClaimedSend, tuple[list[OutboxRow], list[OutboxRow]]]
        self.enqueue_send = GroupCommit(
            functools.partial(
                self.store.enqueue_claimed_many, lease_seconds=config.send_lease_seconds
            ),
            self.write_started,
            self._crowded,
        )
        self.mark_sent: GroupCommit[list[tuple[int, str | None]], int]
        self.mark_sent = GroupCommit(self.store.mark_sent_groups, self.write_started, self._crowded)

    def _crowded(self) -> bool:
        """More than one user's send is going out in this process."""
        return len(self._turns) > 1

    def user_turn(
        self,
        bot_id: str,
        user_id: str,
        *,
        meanwhile: Callable[[], Awaitable[Any]] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """One send at a time to each user of this process, in the order they asked:
        a send to a user whose previous send is still going out waits here for its turn
        (instead of polling until the rows ahead of it went). Only speed depends on it:
        the store keeps each user's rows in order whoever sends them.

        ``meanwhile`` runs once the wait has lasted ``TURN_PATIENCE`` seconds (a send stores
        its rows then, so that a long wait does not leave them only in memory)."""
        return _TakeTurn(self._turns, (bot_id, user_id), meanwhile)

    def pacer(self, bot_id: str) -> Pacer:
        """The fan-out pace of one account (``fanout_per_second``), shared by this process."""
        pacer = self._pacers.get(bot_id)
        if pacer is None:
            pacer = self._pacers[bot_id] = Pacer(self.config.fanout_per_second)
        return pacer

    def client(self, account: Account) -> IlinkClient:
        """An :class:`IlinkClient` for a stored account (cached; re-made if the token changed)."""
        cached = self._clients.get(account.bot_id)
        base = account.base_url or self.config.base_url
        if cached is None or cached.token != account.token or cached.base_url != base:
            cached = self._new_client(base, account.token)
            self._clients[account.bot_id] = cached
        return cached

    def anonymous_client(self) -> IlinkClient:
        """A client without a token, for QR login."""
        return self._new_client(self.config.base_url, None)

    def _new_client(self, base_url: str, token: str | None) -> IlinkClient:
        # IlinkClient registers the token with the log redaction itself.
        return IlinkClient(
            base_url,
            token,
            http=self.http,
            channel_version=self.config.channel_version,
            bot_agent=self.config.bot_agent,
            route_tag=self.config.route_tag,
        )

    async def mark_expired(self, bot_id: str) -> None:
        """The server answered -14 for this account (see :func:`accounts.mark_expired`)."""
        await self.call(mark_expired, self.store, bot_id)

    async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking store call off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def read(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Run a read-only store call. On SQLite it runs right here: a WAL reader never
        waits for a writer, and reading a row (~0.03 ms) costs less than the trip to a
        thread and back (~0.1 ms). On PostgreSQL it is a network round trip: a thread."""
        if self._sqlite:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def write(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Run a short store write that takes ``nowait``. On SQLite it is first tried right
        here with ``nowait=True``: it either commits at once (~0.2 ms, less than the trip to
        a thread and back) or, when another thread or process holds the write lock, raises
        :class:`store.StoreBusy` at once, and then runs in a thread that waits its turn.
        On PostgreSQL it always runs in a thread."""
        return await self.write_started(fn, *args, **kwargs)

    def write_started(self, fn: Any, /, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """:meth:`write`, started, as a future. The future settles even when whoever awaits
        it is cancelled: the thread runs to its end (what group commits rely on)."""
        loop = asyncio.get_running_loop()
        if self._sqlite:
            done = loop.create_future()
            try:
                done.set_result(fn(*args, nowait=True, **kwargs))
                return done
            except StoreBusy:
                pass
            except Exception as exc:
                done.set_exception(exc)
                return done
        # as asyncio.to_thread: the caller's context variables go along
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return loop.run_in_executor(None, call)

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._own_store:
            self.store.close()
