"""``Bot``: handlers, commands, schedules and pushes for one or more bot accounts.

::

    from ilinkbot import Bot, filters

    bot = Bot.from_config()

    @bot.command("help")
    async def help_(msg, ctx):
        await msg.reply("I echo what you write.")

    @bot.message(filters.text)
    async def echo(msg, ctx):
        await msg.reply(msg.text)

    bot.run()
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from ilinkbot.store import Store

from .config import Config, load_config
from .outbox import SendResult
from .push import PushRequest
from .router import Router
from .runtime import Runtime
from .scheduler import Clock
from .service import Service

__all__ = ["Bot"]


class Bot(Router):
    """A :class:`Router` plus how to run it: handlers and schedules over the accounts
    stored by ``ilinkbot login``, and pushes from Python."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name="bot")
        self._config = config
        self._transport = transport
        self._store = store
        self.clock = clock
        self._runtime: Runtime | None = None

    @classmethod
    def from_config(cls, path: str | Path | None = None, **overrides: Any) -> Bot:
        """A bot configured from ``config.json``/environment, with ``overrides`` applied."""
        config = load_config(path)
        return cls(config.with_overrides(**overrides) if overrides else config)

    # ---- configuration ------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """Whether a configuration was given (else ``config.json``/environment is read)."""
        return self._config is not None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config()
        return self._config

    def configure(
        self,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        store: Store | None = None,
    ) -> None:
        """Replace config/transport/store before the bot starts (used by ``ilinkbot run``)."""
        if self._runtime is not None:
            raise RuntimeError("the bot is already running")
        self._config = config
        if transport is not None:
            self._transport = transport
        if store is not None:
            self._store = store

    @property
    def runtime(self) -> Runtime:
        """Store, HTTP, outbox, typing and media: made on first use, closed by ``aclose``."""
        if self._runtime is None:
            self._runtime = Runtime(
                self.config, store=self._store, transport=self._transport, clock=self.clock
            )
        return self._runtime

    @property
    def service(self) -> Service:
        return self.runtime.service

    @property
    def store(self) -> Store:
        return self.runtime.store

    # ---- sending ----------------------------------------------------------------------------

    async def send(
        self,
        text: str | None = None,
        *,
        to: str | list[str] | None = None,
        title: str | None = None,
        image: str | Path | None = None,
        file: str | Path | None = None,
        video: str | Path | None = None,
        caption: str | None = None,
        account: str | None = None,
    ) -> SendResult:
        """Push a message; the same path as ``send_to_wechat`` and ``ilinkbot send``."""
        request = PushRequest(
            text, title=title, image=image, file=file, video=video, caption=caption
        )
        return await self.runtime.push(request, to=to, account=account)

    async def broadcast(
        self,
        text: str | None = None,
        *,
        to: list[str],
        title: str | None = None,
        image: str | Path | None = None,
        file: str | Path | None = None,
        video: str | Path | None = None,
        caption: str | None = None,
        account: str | None = None,
    ) -> SendResult:
        """Push one message to many users: up to ``send_concurrency`` at a time, paced by
        ``fanout_per_second``; all or nothing if one of them never wrote to the bot."""
        if not to:
            raise ValueError("broadcast needs at least one recipient")
        return await self.send(
            text,
            to=list(to),
            title=title,
            image=image,
            file=file,
            video=video,
            caption=caption,
            account=account,
        )

    # ---- running ------------------------------------------------------------------------------

    def run(self, *, accounts: list[str] | None = None) -> int:
        """Poll and handle until SIGINT/SIGTERM. Returns the process exit code."""
        from .runner import Runner

        return asyncio.run(Runner(self, accounts=accounts).serve())

    async def aclose(self) -> None:
        if self._runtime is not None:
            await self._runtime.aclose()
            self._runtime = None
