"""``Runtime``: what a running bot has, in one object: the service (config, store, HTTP,
clients), the outbox, typing, media and the event loop that handlers call back into.

``Message`` and ``Context`` see it only through :class:`~ilinkbot.bot.message.HandlerRuntime`,
a small typed interface; the dispatcher and the pollers use it directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ilinkbot.ilink import IlinkError
from ilinkbot.ilink.log import get_logger
from ilinkbot.ilink.models import TypingStatus, WeixinMessage
from ilinkbot.store import Account, Store

from . import spool
from .config import Config
from .events import Events
from .outbox import Outbox, SendResult
from .payloads import Payload
from .push import PushRequest, push
from .scheduler import Clock
from .service import Service
from .typing_ticket import TypingTickets

__all__ = ["Runtime"]

T = TypeVar("T")
_log = get_logger("ilinkbot.bot")

TYPING_KEEPALIVE_SECONDS = 5.0


class Runtime:
    """Built lazily by :class:`~ilinkbot.bot.app.Bot`; closed when the bot stops."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.service = Service(config, store=store, transport=transport)
        #: Observers of what is received and delivered (``serve --webhook``).
        self.events = Events()
        self.outbox = Outbox(self.service, events=self.events)
        #: True while a receive loop polls: pushes then skip their catch-up long-poll.
        self.polling = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tickets = TypingTickets(clock)

    @property
    def store(self) -> Store:
        return self.service.store

    async def aclose(self) -> None:
        await self.service.aclose()

    # ---- the loop that plain ``def`` handlers call back into -----------------------------

    def bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def bridge(self, coro: Coroutine[Any, Any, T]) -> Any:
        """``coro`` itself on the loop's thread (awaitable); from a worker thread, run it on
        the loop and block for the result."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            return coro
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def store_call(self, fn: Callable[..., T], /, *args: Any) -> T:
        """A blocking store call from the loop, run as the service decides (a thread)."""
        result: T = await self.service.call(fn, *args)
        return result

    # ---- sending ----------------------------------------------------------------------------

    async def push(
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
            outbox=self.outbox,
            next_ids=next_ids,
        )

    async def submit(
        self, account: Account, user: str, payloads: Sequence[Payload], client_ids: list[str]
    ) -> SendResult:
        return await self.outbox.submit(account, user, payloads, client_ids=client_ids)

    def keep_media(self, source: str | Path | bytes, name: str) -> Path:
        """A path for ``source``: bytes are written to the spool first."""
        if not isinstance(source, bytes):
            return Path(source)
        return spool.keep(self.config.home, source, name)

    # ---- media ---------------------------------------------------------------------------------

    async def download(self, wx: WeixinMessage, message_id: str, dest: str | Path | None) -> Any:
        from ilinkbot.cdn import CdnDownloadError, MediaRefused, download_media, pick_media

        ref = pick_media(wx)
        if ref is None:
            return None
        try:
            return await download_media(
                self.service.http,
                self.config.cdn_base_url,
                ref,
                dest=Path(dest) if dest else None,
                max_bytes=self.config.media_max_bytes,
                allowed_domains=self.config.cdn_download_domains,
            )
        except (MediaRefused, CdnDownloadError) as exc:
            # A refusal (too large, foreign URL, bad key) or a definite failure is the same
            # on every retry: answer None. A transient failure raises, so the handler retries.
            if isinstance(exc, CdnDownloadError) and exc.retryable:
                raise
            _log.warning("download_failed", message_id=message_id, error=str(exc))
            return None

    # ---- typing -----------------------------------------------------------------------------

    @asynccontextmanager
    async def typing(self, account: Account, user: str) -> AsyncIterator[None]:
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

    async def _ticket(self, account: Account, user: str) -> str:
        async def fetch() -> str:
            peer = await self.service.read(self.store.get_peer, account.bot_id, user)
            token = peer.context_token if peer else None
            ticket: str = await self.service.client(account).get_config(user, token)
            return ticket

        return await self._tickets.get((account.bot_id, user), fetch)
