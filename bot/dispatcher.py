"""``Dispatcher``: from a stored inbound message to its handler, exactly once.

Filter matching, a fresh ``Message``/``Context`` per attempt, retries with back-off, the
error handlers and dead-lettering. Users run concurrently, one user's messages in order.

``feed()`` handles one update without any poll loop, which is how a user's own tests drive
their handlers (see :mod:`ilinkbot.testing`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from ilinkbot.ilink import WeixinMessage
from ilinkbot.ilink.log import get_logger
from ilinkbot.store import Account, InboxRow

from .inbound import MALFORMED_SENDER, inbound_record
from .message import Context, Message, ReplyIds
from .metrics import METRICS
from .router import Handler, Router
from .runtime import Runtime
from .waiting import backoff, pause

__all__ = ["Dispatcher", "call_flexibly"]

_log = get_logger("ilinkbot.dispatcher")

MAX_CONCURRENT_HANDLERS = 32


async def call_flexibly(func: Callable[..., Any], *args: Any) -> Any:
    """Call ``func`` with as many of ``args`` as it takes; plain functions run in a
    worker thread so they cannot block the loop."""
    try:
        params = inspect.signature(func).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_all = any(p.kind is p.VAR_POSITIONAL for p in params)
        n = len(args) if takes_all else min(len(args), len(positional))
    except (TypeError, ValueError):
        n = len(args)
    if inspect.iscoroutinefunction(func):
        return await func(*args[:n])
    result = await asyncio.to_thread(func, *args[:n])
    if inspect.isawaitable(result):
        return await result
    return result


class Dispatcher:
    def __init__(self, router: Router, runtime: Runtime) -> None:
        self.router = router
        self.runtime = runtime
        self._queues: dict[tuple[str, str], asyncio.Queue[Any]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._inflight: set[int] = set()
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_HANDLERS)

    # ---- without a poll loop ---------------------------------------------------------------

    async def feed(self, account: Account, update: WeixinMessage | dict[str, Any]) -> Any:
        """Store ``update`` as a poll would (the cursor stays where it is), handle it now,
        and return its inbox row as it ends: handled, or dead-lettered. ``None`` when the
        update was seen before (a ``message_id`` is handled once)."""
        store = self.runtime.store
        wx = update if isinstance(update, WeixinMessage) else WeixinMessage.from_dict(update)
        rows = await self.runtime.service.call(
            store.record_batch, account.bot_id, [inbound_record(wx)], ""
        )
        if not rows:
            return None
        await self.handle(account, rows[0])
        return await self.runtime.service.read(store.get_inbox, rows[0].id)

    # ---- from a poll loop ----------------------------------------------------------------------

    def dispatch(self, account: Account, row: InboxRow) -> None:
        """Queue ``row`` behind its user's earlier messages; returns at once."""
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

    async def finish(self, grace: float) -> None:
        """Let running handlers end within ``grace`` seconds, then cancel the rest (their
        rows stay unhandled in the inbox and are handled first on the next start)."""
        if not self._workers:
            return
        _done, pending = await asyncio.wait(set(self._workers), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            _log.warning("handlers_cancelled_at_shutdown", count=len(pending))

    async def _user_worker(
        self, key: tuple[str, str], account: Account, queue: asyncio.Queue[Any]
    ) -> None:
        try:
            while not queue.empty():
                row = queue.get_nowait()
                try:
                    async with self._sem:
                        await self.handle(account, row)
                finally:
                    self._inflight.discard(row.id)
        finally:
            # No await between the last empty() and here, so nothing can have been queued
            # meanwhile.
            if self._queues.get(key) is queue:
                del self._queues[key]

    # ---- one message -------------------------------------------------------------------------

    async def handle(self, account: Account, row: InboxRow) -> None:
        """Run the first matching handler for ``row`` until it succeeds or is dead-lettered."""
        runtime = self.runtime
        store = runtime.store
        if not row.user_id or row.user_id == MALFORMED_SENDER:
            await runtime.service.call(
                store.record_handler_failure, row.id, "malformed message: no sender", max_attempts=1
            )
            _log.warning("malformed_message_kept", account=account.bot_id, inbox_id=row.id)
            return
        probe = Message(runtime, account, row)
        handler = next((h for h in self.router.handlers if self._matches(h, probe)), None)
        attempt = 0
        while True:
            attempt += 1
            # Each attempt numbers what it sends from 0 again, so a retry re-uses the ids of
            # the previous attempt and nothing is sent twice (the error handler has its own).
            msg, ctx = self._handling(account, row, "handler")
            try:
                if handler is not None:
                    await call_flexibly(handler.func, msg, ctx)
                await ctx.flush()  # its data writes are stored before it counts as handled
                await runtime.service.call(store.mark_handled, row.id)
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
                for on_error in self.router.error_handlers:
                    try:
                        await call_flexibly(on_error, exc, msg, ctx)
                    except Exception:
                        _log.exception("error_handler_failed")
                updated = await runtime.service.call(
                    store.record_handler_failure,
                    row.id,
                    f"{type(exc).__name__}: {exc}",
                    max_attempts=runtime.config.handler_max_attempts,
                )
                dead = getattr(updated, "dead_at", None) is not None
                METRICS.handler_failed(dead=dead)
                if dead:
                    _log.error(
                        "message_dead_lettered",
                        account=account.bot_id,
                        inbox_id=row.id,
                        attempts=attempt,
                    )
                    return
                await pause(backoff(attempt))

    def _handling(self, account: Account, row: InboxRow, namespace: str) -> tuple[Message, Context]:
        ids = ReplyIds(account.bot_id, row, namespace)
        return (
            Message(self.runtime, account, row, ids),
            Context(self.runtime, account, row.user_id, ids),
        )

    def _matches(self, handler: Handler, msg: Message) -> bool:
        try:
            return bool(handler.matches(msg))
        except Exception:
            _log.exception("filter_failed", handler=handler.name)
            return False
