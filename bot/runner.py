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

from . import spool
from .accounts import choose_account, find_account
from .dispatcher import Dispatcher, call_flexibly
from .errors import AccountError
from .exitcodes import Exit
from .message import Context
from .poller import Poller
from .scheduler import Job, Scheduler

if TYPE_CHECKING:
    from .app import Bot

__all__ = ["Runner"]

_log = get_logger("ilinkbot.runner")


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
        self.pollers: dict[str, Poller] = {}

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
        dispatcher = Dispatcher(bot, runtime)
        runtime.polling = True
        _log.info("bot_started", accounts=[a.bot_id for a in accounts], owner=self.owner)
        self.pollers = {
            a.bot_id: Poller(
                a, runtime, dispatcher, owner=self.owner, stop=self.stop, started=self.started
            )
            for a in accounts
        }
        tasks = [asyncio.create_task(p.run()) for p in self.pollers.values()]
        jobs = asyncio.create_task(self._schedules(accounts))
        sweeper = asyncio.create_task(spool.sweep_forever(runtime.service))
        try:
            results = await asyncio.gather(*tasks)
        finally:
            self.stop.set()
            jobs.cancel()
            sweeper.cancel()
            await dispatcher.finish(bot.config.shutdown_grace_seconds)
            runtime.polling = False
            await bot.aclose()
        if all(r == "expired" for r in results):
            _log.error("all_sessions_expired", hint="run `ilinkbot login`")
            return int(Exit.SESSION_EXPIRED)
        return int(Exit.OK)

    @property
    def expired(self) -> set[str]:
        """The accounts whose session expired while running."""
        return {bot_id for bot_id, p in self.pollers.items() if p.expired}

    def request_stop(self) -> None:
        if not self.stop.is_set():
            _log.info("stopping", hint="finishing running handlers")
            self.stop.set()

    async def _accounts(self) -> list[Any]:
        store = self.bot.store
        if self.wanted:
            found = []
            for w in self.wanted:
                acc = await asyncio.to_thread(find_account, store, w)
                if acc is None:
                    raise AccountError(f"no account {w!r}; see `ilinkbot status`")
                found.append(acc)
        else:
            found = [
                a
                for a in await asyncio.to_thread(store.list_accounts)
                if a.state == "active" and a.token
            ]
        usable = [a for a in found if a.state == "active" and a.token]
        if not usable:
            # Never start a QR login from a background process: say what to do instead.
            await asyncio.to_thread(choose_account, store, None)  # raises the right error
            raise AccountError("no active account; run `ilinkbot login`")
        return usable

    # ---- schedules --------------------------------------------------------------------------

    async def _schedules(self, accounts: list[Any]) -> None:
        bot = self.bot
        if not bot.jobs:
            return

        async def run_job(job: Job) -> None:
            acc = self._job_account(job, accounts)
            if acc is None:
                return
            poller = self.pollers.get(acc.bot_id)
            if poller is None or not poller.polling:
                _log.info("schedule_skipped", job=job.name, reason="account polled elsewhere")
                return
            ctx = Context(bot.runtime, acc, None)
            try:
                await call_flexibly(job.func, ctx)
            finally:
                await ctx.flush()

        await Scheduler(bot.jobs, run_job, bot.clock).run(self.stop)

    def _job_account(self, job: Job, accounts: list[Any]) -> Any:
        if job.account:
            for a in accounts:
                if job.account in (a.bot_id, a.bot_id.replace("@im.bot", "-im-bot")):
                    return a
            _log.warning("schedule_account_missing", job=job.name, account=job.account)
            return None
        return accounts[0]
