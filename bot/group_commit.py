"""Group commit: the store writes of concurrent sends share transactions.

Every push writes twice: its rows before the first attempt, and ``sent`` once the server
answered. With many pushes in flight those writes used to be one transaction each, and on
SQLite each one that found the lock taken went to a thread of its own, where they queued
for the lock and for the GIL; 16 pushes in flight then sent fewer messages a second than one
(``docs/benchmarks.md``, figure ``official``).

A :class:`GroupCommit` commits the first write that arrives at once (in place when the store
allows it, see :meth:`bot.service.Service.write`). Writes that arrive while a commit runs
(in a thread, because another writer holds SQLite's lock, or always on PostgreSQL) wait in
memory and go into the next transaction together. No promise moves: a caller's write is
committed when its ``await`` returns, and a write that failed fails its caller.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

Item = TypeVar("Item")
Result = TypeVar("Result")

#: ``run(items, nowait=...)``: one transaction for all ``items``; per item its result, or the
#: exception of that item alone.
BatchWrite = Callable[..., Sequence[Any]]


class GroupCommit(Generic[Item, Result]):
    """``await commit(item)``: ``item`` written in a transaction shared with the items of
    other callers that arrived meanwhile. ``start(run, items)`` begins one such write as
    :meth:`bot.service.Service.write_started` does (in place when it need not wait, else in
    a thread) and returns its future. ``crowded()``: whether other sends are in flight, so
    that waiting a turn for them can pay."""

    def __init__(
        self,
        run: BatchWrite,
        start: Callable[[BatchWrite, list[Any]], asyncio.Future[Any]],
        crowded: Callable[[], bool] = lambda: True,
    ) -> None:
        self._run = run
        self._start = start
        self._crowded = crowded
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._committing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, item: Item) -> Result:
        if self._committing or self._waiting or self._crowded():
            return await self._in_group(item)
        # Alone (one send at a time): its own transaction at once, without the group's
        # futures. Writes that arrive while it runs in a thread wait for the next one.
        self._committing = True
        try:
            running = self._start(self._run, [item])
            if not running.done():
                await asyncio.wait({running})  # if cancelled, the thread still commits
        finally:
            self._committing = False
            self._hand_over_waiting()
        (result,) = running.result()  # the transaction's own failure raises here
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    async def _in_group(self, item: Item) -> Result:
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if not self._committing:
            self._committing = True
            try:
                await self._commit_waiting()
            except asyncio.CancelledError:
                done.cancel()  # not written yet: it never will be; already written: it stays
                raise
            finally:
                self._committing = False
                self._hand_over_waiting()
        return await done

    def _hand_over_waiting(self) -> None:
        """Writes left waiting when a commit ended (its caller was cancelled, or they came
        while it ran alone): a task of their own writes them."""
        if self._waiting:
            task = asyncio.get_running_loop().create_task(self._take_over())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _take_over(self) -> None:
        if self._committing or not self._waiting:
            return
        self._committing = True
        try:
            await self._commit_waiting()
        finally:
            self._committing = False

    async def _commit_waiting(self) -> None:
        if self._crowded():
            # One turn of the event loop first: the sends that are ready to write in this
            # turn (answers that came in together) join this transaction.
            await asyncio.sleep(0)
        while self._waiting:
            batch = [(item, done) for item, done in self._waiting if not done.done()]
            self._waiting = []
            if not batch:
                return
            running = self._start(self._run, [item for item, _ in batch])
            if running.done():  # committed in place
                _settle_from(batch, running)
                continue
            # If this caller is cancelled the thread still commits, and the batch's other
            # callers still hear how it went.
            running.add_done_callback(functools.partial(_settle_from, batch))
            await asyncio.wait({running})  # never raises: the callback settles the batch


def _settle(batch: list[tuple[Any, asyncio.Future[Any]]], results: Sequence[Any]) -> None:
    for (_, done), result in zip(batch, results, strict=True):
        if done.done():
            continue
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)


def _fail(batch: list[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, done in batch:
        if not done.done():
            done.set_exception(exc)


def _settle_from(
    batch: list[tuple[Any, asyncio.Future[Any]]], running: asyncio.Future[Any]
) -> None:
    if running.cancelled():
        _fail(batch, asyncio.CancelledError())
    elif running.exception() is not None:
        _fail(batch, running.exception())  # type: ignore[arg-type]
    else:
        _settle(batch, running.result())
