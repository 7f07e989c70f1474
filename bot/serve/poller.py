"""``serve --poll``: the receive loop (and a bot's handlers) in the serving process.

The :class:`~ilinkbot.bot.runner.Runner` needs a logged-in account; until there is one (or
after every session expired) the poller waits, and a login through the page starts it.
"""

from __future__ import annotations

import asyncio
import contextlib

from ilinkbot.ilink.log import get_logger

from ..app import Bot
from ..runner import Runner

__all__ = ["Poller"]

_log = get_logger("ilinkbot.serve.poll")

#: How long to wait before looking for accounts again when none could be polled.
IDLE_RETRY_SECONDS = 30.0


class Poller:
    def __init__(self, bot: Bot, *, accounts: list[str] | None = None) -> None:
        self.bot = bot
        self.accounts = accounts
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._runner: Runner | None = None
        self.last_exit: int | None = None

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._runner is not None:
            self._runner.request_stop()

    def accounts_changed(self) -> None:
        """A login happened. A running receive loop picks the new account up by itself
        (within ``ACCOUNTS_REFRESH_SECONDS``); one waiting for a first account starts now."""
        if self._runner is None:
            _log.info("poller_start", reason="login")
            self._wake.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self._runner = Runner(self.bot, accounts=self.accounts, install_signals=False)
            try:
                self.last_exit = await self._runner.serve()
            except Exception:
                _log.exception("poller_failed")
                self.last_exit = 1
            finally:
                self._runner = None
            if self._stop.is_set():
                break
            if self._wake.is_set():
                continue  # restarted on purpose: poll again right away
            _log.info(
                "poller_waiting",
                exit_code=self.last_exit,
                hint="log in on /login or with `ilinkbot login`",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_RETRY_SECONDS)
