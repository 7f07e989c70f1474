"""``Runner``: a running bot. It picks the accounts, starts a :class:`Poller` for each
and the schedules, and on SIGINT/SIGTERM stops them and lets handlers finish.

The parts: the bot's :class:`Router` (what to run), its :class:`Runtime` (store, HTTP,
outbox), a :class:`Dispatcher` (handlers) and one :class:`Poller` per account (fetching).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ilinkbot.ilink.log import get_logger
from ilinkbot.store import Account

from . import spool
from .accounts import choose_account, find_account
from .dispatcher import Dispatcher, call_flexibly
from .errors import AccountError
from .exitcodes import Exit
from .message import Context
from .metrics import METRICS
from .poller import Poller
from .scheduler import Job, Scheduler
from .share import LeaseShare

if TYPE_CHECKING:
    from .app import Bot

__all__ = ["Runner"]

_log = get_logger("ilinkbot.runner")


#: How often a running bot looks for accounts logged in, out or expired by other processes,
#: and renews its polling leases (all in one statement).
ACCOUNTS_REFRESH_SECONDS = 2.0
#: How often it looks for accounts with rows waiting in the outbox (left by retries or other
#: processes), in one read, and drains those.
DRAIN_EVERY_SECONDS = 15.0


class Runner:
    def __init__(
        self, bot: Bot, *, accounts: list[str] | None = None, install_signals: bool = True
    ) -> None:
        self.bot = bot
        self.wanted = accounts
        self.install_signals = install_signals
        self.stop = asyncio.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = datetime.now(UTC)
        #: Every account polled during this run, by bot id (ended ones too).
        self.pollers: dict[str, Poller] = {}
        self._running: dict[str, asyncio.Task[str]] = {}
        self._changed = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        #: This process's share of the accounts when several processes poll one store.
        self.share = LeaseShare()
        #: SIGINT/SIGTERM or request_stop(), as opposed to running out of accounts.
        self.stop_requested = False

    # ---- lifecycle --------------------------------------------------------------------------

    async def serve(self) -> int:
        bot = self.bot
        runtime = bot.runtime
        runtime.bind_loop()
        try:
            accounts = await self._accounts()
        except AccountError as exc:
            _log.error("no_account", error=str(exc))
            await bot.aclose()
            return int(exc.exit_code)
        if self.install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        self._dispatcher = Dispatcher(bot, runtime)
        await self._update_share(len(accounts))
        runtime.polling = True
        _log.info("bot_started", accounts=len(accounts), owner=self.owner)
        for account in accounts:
            self._start(account)
        METRICS.count_polls(self, lambda: sum(p.polling for p in self.pollers.values()))
        helpers = [
            asyncio.create_task(self._watch_accounts()),
            asyncio.create_task(self._drain_forever()),
            asyncio.create_task(self._schedules()),
            asyncio.create_task(spool.sweep_forever(runtime.service)),
        ]
        try:
            await self._until_done()
        finally:
            self.stop.set()
            METRICS.forget_polls(self)
            for poller in self.pollers.values():
                poller.stop.set()
            for task in helpers:
                task.cancel()
            # Pollers say notifystop (briefly) while running handlers finish: together.
            await asyncio.gather(
                asyncio.gather(*self._running.values(), return_exceptions=True),
                self._dispatcher.finish(bot.config.shutdown_grace_seconds),
            )
            await runtime.service.call(bot.store.retire_worker, self.owner)
            runtime.polling = False
            await bot.aclose()
        if self.stop_requested:
            return int(Exit.OK)
        if self.expired:
            _log.error("all_sessions_expired", hint="run `ilinkbot login`")
            return int(Exit.SESSION_EXPIRED)
        _log.error("no_account_left", hint="run `ilinkbot login`")
        return int(Exit.NO_ACCOUNT)

    @property
    def expired(self) -> set[str]:
        """The accounts whose session expired while running."""
        return {bot_id for bot_id, p in self.pollers.items() if p.expired}

    def request_stop(self) -> None:
        if not self.stop.is_set():
            _log.info("stopping", hint="finishing running handlers")
            self.stop_requested = True
            self.stop.set()
            self._changed.set()

    async def _until_done(self) -> None:
        """Until a stop is requested, or no account is left to poll."""
        while not self.stop.is_set():
            self._changed.clear()
            if not self._running:
                return
            await self._changed.wait()

    # ---- accounts that come and go --------------------------------------------------------------

    def _start(self, account: Account) -> None:
        assert self._dispatcher is not None
        poller = Poller(
            account,
            self.bot.runtime,
            self._dispatcher,
            owner=self.owner,
            stop=asyncio.Event(),
            started=self.started,
            share=self.share,
        )
        self.pollers[account.bot_id] = poller
        task = asyncio.create_task(poller.run())
        self._running[account.bot_id] = task

        def ended(_: asyncio.Task[str], bot_id: str = account.bot_id) -> None:
            if self._running.get(bot_id) is task:
                del self._running[bot_id]
            self._changed.set()

        task.add_done_callback(ended)
        _log.debug("account_started", account=account.bot_id)

    async def _watch_accounts(self) -> None:
        """Poll accounts logged in by another process (CLI, web page), and stop polling
        those logged out or expired, within :data:`ACCOUNTS_REFRESH_SECONDS`."""
        # A third of the lease at most, so a dead worker's share moves on soon after it.
        every = min(ACCOUNTS_REFRESH_SECONDS, self.bot.config.poll_lease_seconds / 3)
        while not self.stop.is_set():
            await asyncio.sleep(every)
            try:
                active = {a.bot_id: a for a in await self._usable_accounts()}
            except Exception:
                _log.exception("accounts_refresh_failed")
                continue
            added = [a for bot_id, a in active.items() if bot_id not in self._running]
            removed = [bot_id for bot_id in self._running if bot_id not in active]
            for bot_id in removed:
                self.pollers[bot_id].stop.set()
                _log.debug("account_stopped", account=bot_id, reason="no longer active")
            try:
                await self._renew_leases()
            except Exception:
                _log.exception("lease_renew_failed")
            try:  # before starting, so that a new account finds room in this worker's share
                await self._update_share(len(active))
            except Exception:
                _log.exception("heartbeat_failed")
            for account in added:
                self._start(account)
            try:
                await self._wake_unpolled()
            except Exception:
                _log.exception("lease_check_failed")
            if added or removed:
                _log.info(
                    "accounts_changed",
                    added=len(added),
                    removed=len(removed),
                    accounts=len(self._running),
                )

    async def _renew_leases(self) -> None:
        asked_at = asyncio.get_running_loop().time()
        ttl = self.bot.config.poll_lease_seconds
        held = await self.bot.service.call(self.bot.store.renew_leases, self.owner, ttl)
        for poller in self.pollers.values():
            poller.lease_renewed(held, asked_at)

    async def _wake_unpolled(self) -> None:
        """Wake the pollers of accounts nobody polls (a dead worker's, or shed ones), as
        many as this process has room for, so they take the lease now."""
        room = self.share.room
        if not room:
            return
        free = await self.bot.service.read(self.bot.store.unpolled_accounts)
        for bot_id in sorted(free):
            poller = self.pollers.get(bot_id)
            if poller is None or poller.polling or poller.stop.is_set():
                continue
            poller.wake.set()
            room -= 1
            if not room:
                return

    async def _drain_forever(self) -> None:
        while not self.stop.is_set():
            await asyncio.sleep(DRAIN_EVERY_SECONDS)
            try:
                waiting = await self.bot.service.read(self.bot.store.accounts_with_unsent)
            except Exception:
                _log.exception("drain_check_failed")
                continue
            for bot_id in waiting:
                if bot_id in self.pollers:
                    self.pollers[bot_id].drain_soon()

    async def _update_share(self, accounts: int) -> None:
        """Heartbeat, then poll at most a fair share of the accounts: let go of the excess
        (another worker takes it). Accounts named on the command line are never shared."""
        ttl = self.bot.config.poll_lease_seconds
        workers = await self.bot.service.call(self.bot.store.heartbeat_worker, self.owner, ttl)
        if self.wanted:
            return
        before = self.share.limit
        self.share.update(accounts, workers)
        if self.share.limit != before:
            _log.info("share_changed", workers=workers, accounts=accounts, limit=self.share.limit)
        staying = [
            p
            for p in self.pollers.values()
            if p.polling and not p.shed.is_set() and not p.stop.is_set()
        ]
        limit = self.share.limit or 0
        for poller in staying[limit:]:
            poller.shed.set()

    async def _usable_accounts(self) -> list[Any]:
        store = self.bot.store
        if self.wanted:
            found = []
            for w in self.wanted:
                acc = await self.bot.service.read(find_account, store, w)
                if acc is not None:
                    found.append(acc)
        else:
            found = await self.bot.service.read(store.list_accounts)
        return [a for a in found if a.state == "active" and a.token]

    async def _accounts(self) -> list[Any]:
        store = self.bot.store
        for w in self.wanted or []:
            if await self.bot.service.read(find_account, store, w) is None:
                raise AccountError(f"no account {w!r}; see `ilinkbot status`")
        usable = await self._usable_accounts()
        if not usable:
            # Never start a QR login from a background process: say what to do instead.
            await self.bot.service.read(choose_account, store, None)  # raises the right error
            raise AccountError("no active account; run `ilinkbot login`")
        return usable

    # ---- schedules --------------------------------------------------------------------------

    async def _schedules(self) -> None:
        bot = self.bot
        if not bot.jobs:
            return

        async def run_job(job: Job) -> None:
            for account in self._job_accounts(job):
                ctx = Context(bot.runtime, account, None)
                try:
                    await call_flexibly(job.func, ctx)
                except Exception:
                    _log.exception("job_failed", job=job.name, account=account.bot_id)
                finally:
                    await ctx.flush()

        await Scheduler(bot.jobs, run_job, bot.clock).run(self.stop)

    def _job_accounts(self, job: Job) -> list[Any]:
        """The accounts ``job`` runs for now: its own, every account polled here with
        ``per_account``, or the only one. With several and neither, it never guesses."""
        polled = [p.account for p in self.pollers.values() if p.polling]
        if job.account:
            for p in self.pollers.values():
                a = p.account
                if job.account in (a.bot_id, a.bot_id.replace("@im.bot", "-im-bot")):
                    if p.polling:
                        return [a]
                    _log.info("schedule_skipped", job=job.name, reason="account polled elsewhere")
                    return []
            _log.warning("schedule_account_missing", job=job.name, account=job.account)
            return []
        if job.per_account:
            return polled
        if len(self.pollers) > 1:
            _log.error(
                "schedule_ambiguous",
                job=job.name,
                hint="several accounts: give the job account=... or per_account=True",
            )
            return []
        if not polled:
            _log.info("schedule_skipped", job=job.name, reason="account polled elsewhere")
        return polled
