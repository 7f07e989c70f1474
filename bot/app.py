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
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from ilinkbot.ilink import IlinkError
from ilinkbot.ilink.log import get_logger
from ilinkbot.ilink.models import TypingStatus

from . import spool
from .config import Config, load_config
from .outbox import Outbox, SendResult
from .push import PushRequest, push
from .router import Router
from .scheduler import Clock
from .service import Service

__all__ = ["Bot"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_log = get_logger("ilinkbot.bot")

TYPING_KEEPALIVE_SECONDS = 5.0
TYPING_TICKET_TTL_SECONDS = 12 * 3600


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


class Bot(Router):
    """A :class:`Router` plus how to run it: handlers and schedules over the accounts
    stored by ``ilinkbot login``, and pushes from Python."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        store: Any = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name="bot")
        self._config = config
        self._transport = transport
        self._store = store
        self.clock = clock
        self._svc: Service | None = None
        self._outbox_obj: Outbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tickets: dict[tuple[str, str], tuple[str, float]] = {}
        self.polling = False

    @classmethod
    def from_config(cls, path: str | Path | None = None, **overrides: Any) -> Bot:
        """A bot configured from ``config.json``/environment, with ``overrides`` applied."""
        config = load_config(path)
        return cls(config.with_overrides(**overrides) if overrides else config)

    # ---- configuration ------------------------------------------------------------------

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
        store: Any = None,
    ) -> None:
        """Replace config/transport/store before the bot starts (used by ``ilinkbot run``)."""
        if self._svc is not None:
            raise RuntimeError("the bot is already running")
        self._config = config
        if transport is not None:
            self._transport = transport
        if store is not None:
            self._store = store

    @property
    def service(self) -> Service:
        if self._svc is None:
            self._svc = Service(self.config, store=self._store, transport=self._transport)
        return self._svc

    @property
    def store(self) -> Any:
        return self.service.store

    @property
    def _outbox(self) -> Outbox:
        if self._outbox_obj is None:
            self._outbox_obj = Outbox(self.service)
        return self._outbox_obj

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
        return await self._push(request, to=to, account=account)

    async def _push(
        self,
        request: PushRequest,
        *,
        to: str | list[str] | None,
        account: str | None,
        next_ids: Callable[[int], list[str]] | None = None,
    ) -> SendResult:
        return await push(
            self.service,
            request,
            to=to,
            account=account,
            catch_up_seconds=0 if self.polling else 2.0,
            outbox=self._outbox,
            next_ids=next_ids,
        )

    # ---- running ------------------------------------------------------------------------------

    def run(self, *, accounts: list[str] | None = None) -> int:
        """Poll and handle until SIGINT/SIGTERM. Returns the process exit code."""
        from .runner import Runner

        return asyncio.run(Runner(self, accounts=accounts).serve())

    async def aclose(self) -> None:
        if self._svc is not None:
            await self._svc.aclose()
            self._svc = None
            self._outbox_obj = None

    # ---- internals used by Message/Context ----------------------------------------------------

    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _bridge(self, coro: Coroutine[Any, Any, T]) -> Any:
        if self._loop is None or threading.get_ident() == self._loop_thread:
            return coro
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _spool(self, source: str | Path | bytes, name: str) -> Path:
        if not isinstance(source, bytes):
            return Path(source)
        return spool.keep(self.config.home, source, name)

    async def _download(self, msg: Any, dest: str | Path | None) -> Any:
        from ilinkbot.cdn import CdnDownloadError, MediaRefused, download_media, pick_media

        ref = pick_media(msg.wx)
        if ref is None:
            return None
        try:
            return await download_media(
                self.service.http,
                self.config.cdn_base_url,
                ref,
                dest=Path(dest) if dest else None,
                max_bytes=self.config.media_max_bytes,
            )
        except (MediaRefused, CdnDownloadError) as exc:
            # A refusal (too large, foreign URL, bad key) or a definite failure is the same
            # on every retry: answer None. A transient failure raises, so the handler retries.
            if isinstance(exc, CdnDownloadError) and exc.retryable:
                raise
            _log.warning("download_failed", message_id=msg.message_id, error=str(exc))
            return None

    @asynccontextmanager
    async def _typing(self, account: Any, user: str) -> AsyncIterator[None]:
        client = self.service.client(account)
        ticket = await self._ticket(account, user)
        keepalive: asyncio.Task[None] | None = None
        if ticket:

            async def beat() -> None:
                while True:
                    await self._typing_call(client, user, ticket, TypingStatus.TYPING)
                    await asyncio.sleep(TYPING_KEEPALIVE_SECONDS)

            keepalive = asyncio.create_task(beat())
        try:
            yield
        finally:
            if keepalive is not None:
                keepalive.cancel()
                await self._typing_call(client, user, ticket, TypingStatus.CANCEL)

    async def _typing_call(self, client: Any, user: str, ticket: str, status: int) -> None:
        try:
            await client.send_typing(user, ticket, status)
        except IlinkError as exc:
            _log.debug("typing_failed", user=user, error=str(exc))

    async def _ticket(self, account: Any, user: str) -> str:
        key = (account.bot_id, user)
        loop = asyncio.get_running_loop()
        cached = self._tickets.get(key)
        if cached and cached[1] > loop.time():
            return cached[0]
        peer = await self.service.read(self.store.get_peer, account.bot_id, user)
        try:
            ticket = await self.service.client(account).get_config(
                user, peer.context_token if peer else None
            )
        except IlinkError as exc:
            _log.debug("getconfig_failed", user=user, error=str(exc))
            return cached[0] if cached else ""
        self._tickets[key] = (ticket, loop.time() + TYPING_TICKET_TTL_SECONDS)
        return ticket
