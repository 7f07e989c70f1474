"""The receive loop: poll each account, store each batch with its cursor, handle every
message exactly once, in order per user, concurrently across users.

Unlike the official client (which saves the cursor before handling, so a crash loses
the batch), a batch is stored in the inbox together with the cursor in one transaction
and handled afterwards; unhandled rows are handled first on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from ilinkbot.ilink import IlinkError, SessionExpired
from ilinkbot.ilink.log import get_logger

from . import spool
from .accounts import choose_account, find_account
from .app import Bot, call_flexibly
from .errors import AccountError
from .exitcodes import Exit
from .inbound import MALFORMED_SENDER, absorb_batch
from .message import Context, Message, ReplyIds
from .scheduler import Job, Scheduler
from .waiting import backoff, pause

__all__ = ["Runner"]

_log = get_logger("ilinkbot.runner")

#: Pause after a failed poll, and after three failures in a row (PROTOCOL.md §3.4).
RETRY_SECONDS = 2.0
RETRY_AFTER_THREE_SECONDS = 30.0
#: How often a running bot drains the outbox (rows left by retries or other processes).
DRAIN_EVERY_SECONDS = 15.0
MAX_CONCURRENT_HANDLERS = 32


class Runner:
    def __init__(
        self, bot: Bot, *, accounts: list[str] | None = None, install_signals: bool = True
    ) -> None:
        self.bot = bot
        self.wanted = accounts
        self.install_signals = install_signals
        self.stop = asyncio.Event()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._queues: dict[tuple[str, str], asyncio.Queue[Any]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._inflight: set[int] = set()
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_HANDLERS)
        self.expired: set[str] = set()
        self.polling: set[str] = set()
        #: With ``skip_backlog``, unhandled rows stored before this are marked handled.
        self.started = datetime.now(UTC)
        self._skipped: set[str] = set()

    # ---- lifecycle --------------------------------------------------------------------------

    async def serve(self) -> int:
        bot = self.bot
        bot._bind_loop()
        svc = bot.service
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
        bot.polling = True
        _log.info("bot_started", accounts=[a.bot_id for a in accounts], owner=self.owner)
        tasks = [asyncio.create_task(self._account_loop(a)) for a in accounts]
        jobs = asyncio.create_task(self._schedules(accounts))
        sweeper = asyncio.create_task(spool.sweep_forever(svc))
        try:
            results = await asyncio.gather(*tasks)
        finally:
            self.stop.set()
            jobs.cancel()
            sweeper.cancel()
            await self._finish_handlers()
            bot.polling = False
            await svc.aclose()
            bot._svc = None
            bot._outbox_obj = None
        if all(r == "expired" for r in results):
            _log.error("all_sessions_expired", hint="run `ilinkbot login`")
            return int(Exit.SESSION_EXPIRED)
        return int(Exit.OK)

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

    async def _finish_handlers(self) -> None:
        if not self._workers:
            return
        grace = self.bot.config.shutdown_grace_seconds
        _done, pending = await asyncio.wait(set(self._workers), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            _log.warning("handlers_cancelled_at_shutdown", count=len(pending))

    # ---- one account ------------------------------------------------------------------------

    async def _account_loop(self, account: Any) -> str:
        store = self.bot.store
        ttl = self.bot.config.poll_lease_seconds
        announced = False
        while not self.stop.is_set():
            got = await asyncio.to_thread(store.acquire_lease, account.bot_id, self.owner, ttl)
            if not got:
                if not announced:
                    _log.info(
                        "account_polled_elsewhere",
                        account=account.bot_id,
                        holder=await asyncio.to_thread(store.lease_holder, account.bot_id),
                    )
                    announced = True
                await self._sleep(ttl / 3)
                continue
            announced = False
            try:
                outcome = await self._poll(account)
            finally:
                await asyncio.to_thread(store.release_lease, account.bot_id, self.owner)
            if outcome in ("expired", "stopped"):
                return outcome
        return "stopped"

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _poll(self, account: Any) -> str:
        bot = self.bot
        store = bot.store
        client = bot.service.client(account)
        lost = asyncio.Event()
        renew = asyncio.create_task(self._renew_lease(account, lost))
        self.polling.add(account.bot_id)
        try:
            await self._best_effort(client.notify_start(), "notifystart", account)
            await self._handle_backlog(account)
            cursor = await asyncio.to_thread(store.get_cursor, account.bot_id)
            failures = 0
            last_drain = asyncio.get_running_loop().time()
            while not self.stop.is_set():
                if lost.is_set():
                    _log.warning("lease_lost", account=account.bot_id)
                    return "lost"
                poll = asyncio.create_task(client.get_updates(cursor))
                stopper = asyncio.create_task(self._first_of(self.stop, lost))
                await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not poll.done():
                    poll.cancel()
                    break
                try:
                    batch = poll.result()
                except SessionExpired:
                    await asyncio.to_thread(store.set_account_state, account.bot_id, "expired")
                    self.expired.add(account.bot_id)
                    _log.error(
                        "session_expired",
                        account=account.bot_id,
                        hint="run `ilinkbot login` to log this account in again",
                    )
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
                    rows = await absorb_batch(bot._outbox, account, batch)
                except SessionExpired:
                    continue  # the next poll reports it
                except Exception:
                    # Not stored: keep the old cursor so the server sends the batch again.
                    _log.exception("batch_not_stored", account=account.bot_id)
                    await self._wait_jittered(RETRY_SECONDS)
                    continue
                if batch.cursor:
                    cursor = batch.cursor
                for row in rows:
                    self._dispatch(account, row)
                now = asyncio.get_running_loop().time()
                if now - last_drain > DRAIN_EVERY_SECONDS:
                    last_drain = now
                    await self._drain(account)
            return "stopped"
        finally:
            self.polling.discard(account.bot_id)
            renew.cancel()
            await self._best_effort(client.notify_stop(), "notifystop", account)

    async def _first_of(self, *events: asyncio.Event) -> None:
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _wait_jittered(self, seconds: float) -> None:
        # jitter within ±25 % so many bots do not retry in step
        delay = seconds * random.uniform(0.75, 1.25)
        stop = asyncio.create_task(self.stop.wait())
        sleeper = asyncio.create_task(pause(delay))
        await asyncio.wait({stop, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        sleeper.cancel()

    async def _renew_lease(self, account: Any, lost: asyncio.Event) -> None:
        ttl = self.bot.config.poll_lease_seconds
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                ok = await asyncio.to_thread(
                    self.bot.store.acquire_lease, account.bot_id, self.owner, ttl
                )
            except Exception:
                _log.exception("lease_renew_failed", account=account.bot_id)
                continue
            if not ok:
                lost.set()
                return

    async def _best_effort(self, coro: Any, what: str, account: Any) -> None:
        try:
            await asyncio.wait_for(coro, timeout=10)
        except (IlinkError, TimeoutError) as exc:
            _log.info(f"{what}_failed", account=account.bot_id, error=str(exc))

    async def _drain(self, account: Any) -> None:
        try:
            await self.bot._outbox.drain(account)
        except SessionExpired:
            pass
        except Exception:
            _log.exception("drain_failed", account=account.bot_id)

    # ---- handling ---------------------------------------------------------------------------

    async def _handle_backlog(self, account: Any) -> None:
        rows = await asyncio.to_thread(self.bot.store.unhandled, account.bot_id)
        if self.bot.config.skip_backlog:
            rows = await self._skip_older(account, rows)
        if rows:
            _log.info("handling_backlog", account=account.bot_id, count=len(rows))
        for row in rows:
            self._dispatch(account, row)

    async def _skip_older(self, account: Any, rows: list[Any]) -> list[Any]:
        """Mark the rows stored before this run started handled, without handlers (what
        python-telegram-bot calls ``drop_pending_updates``); return the others."""
        old = [r for r in rows if r.received_at < self.started]
        store = self.bot.store

        def mark() -> None:
            for r in old:
                store.mark_handled(r.id)

        await asyncio.to_thread(mark)
        if old or account.bot_id not in self._skipped:
            _log.info("backlog_skipped", account=account.bot_id, count=len(old))
        self._skipped.add(account.bot_id)
        return [r for r in rows if r.received_at >= self.started]

    def _dispatch(self, account: Any, row: Any) -> None:
        if row.id in self._inflight:
            return
        self._inflight.add(row.id)
        key = (account.bot_id, row.user_id)
        queue = self._queues.get(key)
        if queue is None:
            queue = asyncio.Queue()
            self._queues[key] = queue
            task = asyncio.create_task(self._user_worker(key, account, queue))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        queue.put_nowait(row)

    async def _user_worker(
        self, key: tuple[str, str], account: Any, queue: asyncio.Queue[Any]
    ) -> None:
        try:
            while not queue.empty():
                row = queue.get_nowait()
                try:
                    async with self._sem:
                        await self._handle(account, row)
                finally:
                    self._inflight.discard(row.id)
        finally:
            # No await between the last empty() and here, so nothing can have been queued
            # meanwhile; rows left by a cancelled worker stay unhandled in the inbox and are
            # handled first on the next start.
            if self._queues.get(key) is queue:
                del self._queues[key]

    async def _handle(self, account: Any, row: Any) -> None:
        bot = self.bot
        store = bot.store
        if not row.user_id or row.user_id == MALFORMED_SENDER:
            await asyncio.to_thread(
                store.record_handler_failure, row.id, "malformed message: no sender", max_attempts=1
            )
            _log.warning("malformed_message_kept", account=account.bot_id, inbox_id=row.id)
            return
        handler = next(
            (h for h in bot.handlers if self._matches(h, Message(bot, account, row))), None
        )
        attempt = 0
        while True:
            attempt += 1
            # Each attempt numbers what it sends from 0 again, so a retry re-uses the ids of
            # the previous attempt and nothing is sent twice (the error handler has its own).
            msg, ctx = self._handling(account, row, "handler")
            try:
                if handler is not None:
                    await call_flexibly(handler.func, msg, ctx)
                await asyncio.to_thread(store.mark_handled, row.id)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.exception(
                    "handler_failed",
                    account=account.bot_id,
                    inbox_id=row.id,
                    handler=handler.name if handler else None,
                    attempt=attempt,
                )
                msg, ctx = self._handling(account, row, "error")
                for on_error in bot.error_handlers:
                    try:
                        await call_flexibly(on_error, exc, msg, ctx)
                    except Exception:
                        _log.exception("error_handler_failed")
                updated = await asyncio.to_thread(
                    store.record_handler_failure,
                    row.id,
                    f"{type(exc).__name__}: {exc}",
                    max_attempts=bot.config.handler_max_attempts,
                )
                if getattr(updated, "dead_at", None) is not None:
                    _log.error(
                        "message_dead_lettered",
                        account=account.bot_id,
                        inbox_id=row.id,
                        attempts=attempt,
                    )
                    return
                await pause(backoff(attempt))

    def _handling(self, account: Any, row: Any, namespace: str) -> tuple[Message, Context]:
        ids = ReplyIds(account.bot_id, row, namespace)
        return Message(self.bot, account, row, ids), Context(self.bot, account, row.user_id, ids)

    def _matches(self, handler: Any, msg: Message) -> bool:
        try:
            return bool(handler.matches(msg))
        except Exception:
            _log.exception("filter_failed", handler=handler.name)
            return False

    # ---- schedules --------------------------------------------------------------------------

    async def _schedules(self, accounts: list[Any]) -> None:
        bot = self.bot
        if not bot.jobs:
            return

        async def run_job(job: Job) -> None:
            acc = self._job_account(job, accounts)
            if acc is None:
                return
            if acc.bot_id not in self.polling:
                _log.info("schedule_skipped", job=job.name, reason="account polled elsewhere")
                return
            await call_flexibly(job.func, Context(bot, acc, None))

        await Scheduler(bot.jobs, run_job, bot.clock).run(self.stop)

    def _job_account(self, job: Job, accounts: list[Any]) -> Any:
        if job.account:
            for a in accounts:
                if job.account in (a.bot_id, a.bot_id.replace("@im.bot", "-im-bot")):
                    return a
            _log.warning("schedule_account_missing", job=job.name, account=job.account)
            return None
        return accounts[0]
