"""What a handler receives: :class:`Message` (one inbound WeChat message) and
:class:`Context` (per-user data, a logger, sending and typing)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    MutableMapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ilinkbot.ilink import MessageItem, WeixinMessage
from ilinkbot.ilink.log import get_logger
from ilinkbot.ilink.models import MessageItemType
from ilinkbot.ilink.wire import derived_client_id
from ilinkbot.store import Account, InboxRow, Store

from .config import Config
from .outbox import SendResult
from .payloads import Payload, media_payload, text_payloads
from .push import PushRequest

__all__ = ["Context", "HandlerRuntime", "Message", "Quote", "ReplyIds", "UserData"]

T = TypeVar("T")

_KINDS = {
    MessageItemType.TEXT: "text",
    MessageItemType.IMAGE: "image",
    MessageItemType.VOICE: "voice",
    MessageItemType.FILE: "file",
    MessageItemType.VIDEO: "video",
}
_LABELS = {"image": "[图片]", "video": "[视频]", "file": "[文件]", "voice": "[语音]"}


def _item_text(item: MessageItem) -> str | None:
    if item.kind is MessageItemType.TEXT and item.text_item and item.text_item.text:
        return item.text_item.text
    if item.kind is MessageItemType.VOICE and item.voice_item and item.voice_item.text:
        return item.voice_item.text
    return None


@dataclass(frozen=True)
class Quote:
    """The message this one quotes (``ref_msg``)."""

    message_id: str | None
    title: str | None
    text: str | None


class HandlerRuntime(Protocol):
    """What ``Message`` and ``Context`` need of the running bot (``bot.runtime.Runtime``)."""

    config: Config

    @property
    def store(self) -> Store: ...

    def bridge(self, coro: Coroutine[Any, Any, T]) -> Any: ...

    async def store_call(self, fn: Callable[..., T], /, *args: Any) -> T: ...

    async def submit(
        self, account: Account, user: str, payloads: Sequence[Payload], client_ids: list[str]
    ) -> SendResult: ...

    async def push(
        self,
        request: PushRequest,
        *,
        to: str | list[str] | None,
        account: str | None,
        next_ids: Callable[[int], list[str]] | None = None,
    ) -> SendResult: ...

    def keep_media(self, source: str | Path | bytes, name: str) -> Path: ...

    async def download(
        self, wx: WeixinMessage, message_id: str, dest: str | Path | None
    ) -> Any: ...

    def typing(self, account: Account, user: str) -> AbstractAsyncContextManager[None]: ...


class ReplyIds:
    """The ``client_id``s of what one run of a handler sends for one inbound message.

    The n-th message sent (each chunk and media counts) gets an id derived from the account,
    the stored inbound message, a namespace (``handler`` or ``error``) and n. Every attempt
    starts at n = 0, so a retried handler, and one re-run after a crash, reuses the ids of
    the previous run: the outbox keeps one row per id and never sends a delivered row again.
    """

    def __init__(self, account_id: str, inbox_row: InboxRow, namespace: str = "handler") -> None:
        self._seed = f"{account_id}:{inbox_row.message_id}:{namespace}"
        created = inbox_row.created_at or inbox_row.received_at
        self._ms = int(created.astimezone(UTC).timestamp() * 1000) if created else 0
        self._position = 0
        self._lock = threading.Lock()  # plain ``def`` handlers send from worker threads

    def take(self, count: int) -> list[str]:
        with self._lock:
            start = self._position
            self._position += count
        return [derived_client_id(self._seed, start + i, self._ms) for i in range(count)]


class Message:
    """One inbound message. What a handler sends for it (replies and ``ctx.send``) gets
    ``client_id``s from ``ids`` (see :class:`ReplyIds`), so a re-run sends nothing twice."""

    def __init__(
        self,
        runtime: HandlerRuntime,
        account: Account,
        inbox_row: InboxRow,
        ids: ReplyIds | None = None,
    ) -> None:
        self._runtime = runtime
        self.account = account
        self.inbox_id: int = inbox_row.id
        raw = inbox_row.raw if isinstance(inbox_row.raw, dict) else {}
        self.raw: dict[str, Any] = raw
        self.wx = WeixinMessage.from_dict(raw)
        self.message_id: str = inbox_row.message_id
        self.user: str = inbox_row.user_id
        self._ids = ids or ReplyIds(account.bot_id, inbox_row)

    # ---- content ------------------------------------------------------------------------

    @property
    def items(self) -> list[MessageItem]:
        return self.wx.items

    @property
    def kind(self) -> str:
        """``text``, ``image``, ``file``, ``video``, ``voice`` or ``unknown`` (first item)."""
        for item in self.items:
            k = item.kind
            if k in _KINDS:
                return _KINDS[k]
        return "unknown"

    @property
    def text(self) -> str:
        """The typed text (or the server's voice transcript); ``""`` when there is none."""
        for item in self.items:
            t = _item_text(item)
            if t:
                return t
        return ""

    @property
    def body(self) -> str:
        """The text, else a label like ``[图片]`` for media (as the official client shows)."""
        return self.text or _LABELS.get(self.kind, "")

    @property
    def command(self) -> str | None:
        """``help`` for ``/help args``; ``None`` when the text is not a command."""
        t = self.text.strip()
        if not t.startswith("/") or len(t) < 2:
            return None
        return t[1:].split(maxsplit=1)[0].lower()

    @property
    def args(self) -> str:
        """What follows the command: ``args`` for ``/help args``."""
        parts = self.text.strip().split(maxsplit=1)
        return parts[1] if self.command and len(parts) > 1 else ""

    @property
    def quote(self) -> Quote | None:
        for item in self.items:
            ref = item.ref_msg
            if ref is not None:
                inner = ref.message_item
                mid = ref.svr_id or (inner.msg_id if inner else None)
                return Quote(mid, ref.title, _item_text(inner) if inner else None)
        return None

    def __repr__(self) -> str:
        return f"<Message {self.message_id} from {self.user} {self.kind}>"

    # ---- replying -----------------------------------------------------------------------

    def _bridge(self, coro: Coroutine[Any, Any, T]) -> Any:
        """Awaitable in async handlers; blocking (run on the bot's loop) in plain ``def``
        handlers, which run in a worker thread."""
        return self._runtime.bridge(coro)

    def reply(self, text: str, *, title: str | None = None) -> Any:
        """Reply with text (long text is split; each chunk its own message)."""
        payloads = text_payloads(text, title=title, chunk_size=self._runtime.config.chunk_size)
        return self._bridge(self._submit(payloads))

    def reply_image(self, image: str | Path | bytes, *, caption: str | None = None) -> Any:
        return self._bridge(self._submit_media(image, "image", caption))

    def reply_file(
        self, file: str | Path | bytes, *, file_name: str | None = None, caption: str | None = None
    ) -> Any:
        return self._bridge(self._submit_media(file, "file", caption, file_name))

    def reply_video(self, video: str | Path | bytes, *, caption: str | None = None) -> Any:
        return self._bridge(self._submit_media(video, "video", caption))

    async def _submit(self, payloads: Sequence[Payload]) -> SendResult:
        ids = self._ids.take(len(payloads))
        return await self._runtime.submit(self.account, self.user, payloads, ids)

    async def _submit_media(
        self,
        source: str | Path | bytes,
        kind: str,
        caption: str | None,
        file_name: str | None = None,
    ) -> SendResult:
        path = self._runtime.keep_media(source, file_name or f"reply.{_ext(kind)}")
        payloads: list[Payload] = []
        if caption:
            payloads += text_payloads(caption, chunk_size=self._runtime.config.chunk_size)
        payloads.append(media_payload(path, kind=kind, file_name=file_name))
        return await self._submit(payloads)

    def download(self, dest: str | Path | None = None) -> Any:
        """The message's media (§4.4 choice), decrypted: ``DownloadedMedia`` with ``data``
        (or written under ``dest``, a directory). ``None`` when there is no media, or it
        cannot be had (refused: over ``media_max_bytes``, a foreign URL, a bad key; or a
        failure a retry would repeat; logged as ``download_failed``). Raises
        ``CdnDownloadError`` (``retryable``) for a transient CDN failure, so the handler is
        retried."""
        return self._bridge(self._runtime.download(self.wx, self.message_id, dest))


def _ext(kind: str) -> str:
    return {"image": "jpg", "video": "mp4"}.get(kind, "bin")


class UserData(MutableMapping[str, Any]):
    """Per-user key/value data persisted in the store (JSON values).

    Reads come from a copy loaded once. In a plain ``def`` handler (a worker thread) a write
    goes to the store before it returns. In an ``async`` handler, ``await data.set(k, v)`` and
    ``await data.delete(k)`` write without blocking the loop; a plain ``data[k] = v`` there
    updates the copy at once and is written in the background, in order, and the message is
    marked handled only after every such write has reached the store."""

    def __init__(
        self,
        store: Store,
        bot_id: str,
        user_id: str,
        call: Callable[..., Awaitable[Any]],
    ) -> None:
        self._store, self._bot_id, self._user = store, bot_id, user_id
        self._call = call  # how a write runs from the event loop (the runtime decides)
        self._cache: dict[str, Any] = dict(store.get_user_data(bot_id, user_id))
        self._last_write: asyncio.Task[None] | None = None

    def __getitem__(self, key: str) -> Any:
        return self._cache[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._cache[key] = value
        self._write(self._store.set_user_value, self._bot_id, self._user, key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self._cache:
            raise KeyError(key)
        del self._cache[key]
        self._write(self._store.delete_user_value, self._bot_id, self._user, key)

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._cache))

    def __len__(self) -> int:
        return len(self._cache)

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` without blocking the event loop."""
        self[key] = value
        await self.flush()

    async def delete(self, key: str) -> None:
        del self[key]
        await self.flush()

    async def flush(self) -> None:
        """Wait until every write made so far has reached the store."""
        if self._last_write is not None:
            await asyncio.shield(self._last_write)

    def _write(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a worker thread: write through
            fn(*args)
            return
        previous = self._last_write

        async def write() -> None:
            if previous is not None:
                await previous  # in the order the handler wrote
            await self._call(fn, *args)

        self._last_write = asyncio.get_running_loop().create_task(write())


class Context:
    """Handed to handlers and scheduled jobs next to the message. In a handler, ``ids``
    are the message's :class:`ReplyIds`, so ``send`` is as repeat-safe as ``msg.reply``."""

    def __init__(
        self,
        runtime: HandlerRuntime,
        account: Account,
        user: str | None = None,
        ids: ReplyIds | None = None,
    ) -> None:
        self._runtime = runtime
        self.account = account
        self.user = user
        self._ids = ids
        self.log = get_logger("ilinkbot.handler", account=account.bot_id, user=user)
        self._data: UserData | None = None
        self._opened: list[UserData] = []

    @property
    def data(self) -> UserData:
        """This user's persisted data (``ctx.data["count"] = 3`` survives restarts)."""
        if self.user is None:
            raise RuntimeError("no user here: use ctx.user_data(user_id)")
        if self._data is None:
            self._data = self.user_data(self.user)
        return self._data

    def user_data(self, user_id: str) -> UserData:
        data = UserData(self._runtime.store, self.account.bot_id, user_id, self._runtime.store_call)
        self._opened.append(data)
        return data

    async def flush(self) -> None:
        """Wait until every ``data`` write made through this context is stored."""
        for data in self._opened:
            await data.flush()

    def send(self, text: str | None = None, *, to: str | None = None, **kw: Any) -> Any:
        """Push to ``to`` (default: this message's user, else the account's owner)."""
        to = to or self.user
        request = PushRequest(text, **kw)
        next_ids = self._ids.take if self._ids else None
        sending = self._runtime.push(request, to=to, account=self.account.bot_id, next_ids=next_ids)
        return self._runtime.bridge(sending)

    @asynccontextmanager
    async def typing(self, user: str | None = None) -> AsyncIterator[None]:
        """Show "typing…" to ``user`` while the block runs (best effort)."""
        async with self._runtime.typing(self.account, user or self.user or ""):
            yield
