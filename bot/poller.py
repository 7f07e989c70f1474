"""``Poller``: one account's receive loop. It only fetches, stores and hands on.

It takes the account's polling lease, long-polls ``getupdates``, stores each batch with its
cursor (``absorb_batch``) and hands the new rows to the dispatcher. Delivering what was held
for the users who wrote, and the periodic outbox drain, run as tasks of their own, so a slow
held video never stalls the loop (nor the other users of the account).

Unlike the official client (which saves the cursor before handling, so a crash loses the
batch), a batch is stored in the inbox together with the cursor in one transaction and
handled afterwards; unhandled rows are handled first on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import datetime
from typing import Any

from ilinkbot.ilink import IlinkError, SessionExpired
from ilinkbot.ilink.log import get_logger
from ilinkbot.store import Account, InboxRow

from .dispatcher import Dispatcher
from .inbound import absorb_batch, writers
from .runtime import Runtime
from .share import LeaseShare
from .waiting import pause

__all__ = ["Poller"]

_log = get_logger("ilinkbot.poller")

#: Pause after a failed poll, and after three failures in a row (PROTOCOL.md §3.4).
RETRY_SECONDS = 2.0
RETRY_AFTER_THREE_SECONDS = 30.0
#: At shutdown, how long a poller waits for its notifystop (best effort): not the grace.
NOTIFY_STOP_SECONDS = 2.0


class Poller:
    def __init__(
        self,
        account: Account,
        runtime: Runtime,
        dispatcher: Dispatcher,
        *,
        owner: str,
        stop: asyncio.Event,
        started: datetime,
        share: LeaseShare | None = None,
    ) -> None:
        self.account = account
        self.runtime = runtime
        self.dispatcher = dispatcher
        self.owner = owner
        self.stop = stop
        self.share = share or LeaseShare()
        #: Set to give the account up (this worker is over its share): the lease is released
        #: and another worker takes the account.
        self.shed = asyncio.Event()
        #: Set by the runner when this worker's lease on the account was found taken.
        self.lost = asyncio.Event()
        self.held_since = 0.0
        #: Set by the runner when the account's lease is free: try it now.
        self.wake = asyncio.Event()
        #: With ``skip_backlog``, unhandled rows stored before this are marked handled.
        self.started = started
        #: True while this process holds the lease and polls.
        self.polling = False
        #: True once the server said the session expired (-14): this poller has ended.
        self.expired = False
        self._skipped = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- the lease ------------------------------------------------------------------------

    async def run(self) -> str:
        """Poll while this process holds the lease: ``expired`` or ``stopped`` at the end."""
        store = self.runtime.store
        svc = self.runtime.service
        bot_id = self.account.bot_id
        ttl = self.runtime.config.poll_lease_seconds
        announced = False
        try:
            while not self.stop.is_set():
                if not self.share.try_take(bot_id):
                    await self._idle(ttl)  # this worker polls its share already
                    continue
                got = await svc.call(store.acquire_lease, bot_id, self.owner, ttl)
                if not got:
                    self.share.give_back(bot_id)
                    if not announced:
                        holder = await svc.read(store.lease_holder, bot_id)
                        _log.debug("account_polled_elsewhere", account=bot_id, holder=holder)
                        announced = True
                    await self._idle(ttl)  # the runner wakes us when the lease is free
                    continue
                announced = False
                try:
                    outcome = await self._poll()
                finally:
                    await svc.call(store.release_lease, bot_id, self.owner)
                    self.share.give_back(bot_id)
                if outcome in ("expired", "stopped"):
                    return outcome
                if outcome == "shed":
                    self.shed.clear()
                    await self._sleep(ttl)  # long enough for an under-share worker to take it
            return "stopped"
        finally:
            for task in self._tasks:
                task.cancel()

    def lease_renewed(self, held: set[str], asked_at: float) -> None:
        """The runner renewed this worker's leases together (``Store.renew_leases``) at
        ``asked_at``: a lease held since before then and missing from ``held`` is lost."""
        if self.polling and self.account.bot_id not in held and self.held_since < asked_at:
            self.lost.set()

    def drain_soon(self) -> None:
        """Rows wait in the outbox for this account (left by retries or other processes)."""
        if self.polling:
            self._spawn(self._drain(None))

    # ---- polling --------------------------------------------------------------------------

    async def _poll(self) -> str:
        account = self.account
        store = self.runtime.store
        client = self.runtime.service.client(account)
        lost = self.lost
        lost.clear()
        self.held_since = asyncio.get_running_loop().time()
        self.polling = True
        try:
            await self._best_effort(client.notify_start(), "notifystart")
            await self._handle_backlog()
            cursor = await self.runtime.service.read(store.get_cursor, account.bot_id)
            failures = 0
            while not self.stop.is_set():
                if lost.is_set():
                    _log.warning("lease_lost", account=account.bot_id)
                    return "lost"
                if self.shed.is_set():
                    _log.debug("account_shed", account=account.bot_id)
                    return "shed"
                poll = asyncio.create_task(client.get_updates(cursor))
                stopper = asyncio.create_task(_first_of(self.stop, lost, self.shed))
                await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not poll.done():
                    poll.cancel()
                    if self.shed.is_set() and not self.stop.is_set():
                        return "shed"
                    break
                try:
                    batch = poll.result()
                except SessionExpired:
                    await self.runtime.service.mark_expired(account.bot_id)
                    self.expired = True
                    return "expired"
                except IlinkError as exc:
                    failures += 1
                    delay = RETRY_AFTER_THREE_SECONDS if failures >= 3 else RETRY_SECONDS
                    if failures >= 3:
                        failures = 0
                    _log.warning(
                        "poll_failed", account=account.bot_id, error=str(exc), retry_in=delay
                    )
                    await self._wait_jittered(delay)
                    continue
                failures = 0
                try:
                    rows = await absorb_batch(self.runtime.outbox, account, batch, release=False)
                except SessionExpired:
                    continue  # the next poll reports it
                except Exception:
                    # Not stored: keep the old cursor so the server sends the batch again.
                    _log.exception("batch_not_stored", account=account.bot_id)
                    await self._wait_jittered(RETRY_SECONDS)
                    continue
                if batch.cursor:
                    cursor = batch.cursor
                self.runtime.events.messages_stored(account, rows)
                await self._release_held(rows)
                for row in rows:
                    self.dispatcher.dispatch(account, row)
            return "stopped"
        finally:
            self.polling = False
            await self._best_effort(client.notify_stop(), "notifystop", NOTIFY_STOP_SECONDS)

    async def _handle_backlog(self) -> None:
        rows = await self.runtime.service.read(self.runtime.store.unhandled, self.account.bot_id)
        if self.runtime.config.skip_backlog:
            rows = await self._skip_older(rows)
        if rows:
            _log.debug("handling_backlog", account=self.account.bot_id, count=len(rows))
        for row in rows:
            self.dispatcher.dispatch(self.account, row)

    async def _skip_older(self, rows: list[InboxRow]) -> list[Any]:
        """Mark the rows stored before this run started handled, without handlers (what
        python-telegram-bot calls ``drop_pending_updates``); return the others."""
        old = [r for r in rows if r.received_at < self.started]
        store = self.runtime.store

        def mark() -> None:
            for r in old:
                store.mark_handled(r.id)

        await self.runtime.service.call(mark)
        if old or not self._skipped:
            _log.info("backlog_skipped", account=self.account.bot_id, count=len(old))
        self._skipped = True
        return [r for r in rows if r.received_at >= self.started]

    # ---- the outbox, in tasks of their own ------------------------------------------------

    async def _release_held(self, rows: list[InboxRow]) -> None:
        """Held rows of each user who wrote go back to pending now, ahead of the replies
        their messages will get; delivering them is a task of its own."""
        outbox = self.runtime.outbox
        for user in writers(rows):
            if await outbox.unhold(self.account, user):
                self._spawn(self._drain(user))

    async def _drain(self, user: str | None) -> None:
        try:
            await self.runtime.outbox.drain(self.account, user)
        except SessionExpired:
            pass
        except Exception:
            _log.exception("drain_failed", account=self.account.bot_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- waiting --------------------------------------------------------------------------

    async def _idle(self, seconds: float) -> None:
        """Wait to try the lease again: until the runner says it is free (``wake``), or at
        most ``seconds``. Idle pollers cost nothing: a worker with 750 accounts polled
        elsewhere does not ask for 750 leases every few seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_first_of(self.stop, self.wake), timeout=seconds)
        self.wake.clear()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _wait_jittered(self, seconds: float) -> None:
        # jitter within ±25 % so many bots do not retry in step
        delay = seconds * random.uniform(0.75, 1.25)
        stop = asyncio.create_task(self.stop.wait())
        sleeper = asyncio.create_task(pause(delay))
        await asyncio.wait({stop, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        sleeper.cancel()

    async def _best_effort(self, coro: Any, what: str, seconds: float = 10.0) -> None:
        try:
            await asyncio.wait_for(coro, timeout=seconds)
        except (IlinkError, TimeoutError) as exc:
            _log.info(f"{what}_failed", account=self.account.bot_id, error=str(exc))


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
