"""Pushes: ``send_to_wechat()`` for scripts and agents, and the pipeline behind
``ilinkbot send`` and ``Bot.send`` (one code path for all three)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from ilinkbot.ilink import IlinkError, SessionExpired
from ilinkbot.ilink.log import get_logger
from ilinkbot.store import Account, Peer

from .accounts import choose_account, find_account, recipient_and_peer
from .config import Config, load_config
from .errors import AccountError, BotError, NoContextError
from .exitcodes import Exit
from .inbound import absorb_batch
from .outbox import MessageOutcome, Outbox, SendResult, messageable_peer
from .payloads import Payload, media_payload, text_payloads
from .service import Service
from .textsplit import encodable

__all__ = ["PushRequest", "catch_up", "push", "send_to_wechat", "utf8_text"]

_log = get_logger("ilinkbot.push")

#: ``last_used_at`` (shown by ``status``) is refreshed at most this often.
TOUCH_EVERY = timedelta(seconds=60)
#: How long ``send`` long-polls getupdates for fresh context tokens when no poller runs.
CATCH_UP_SECONDS = 2.0


def utf8_text(value: str | None, field: str) -> str | None:
    """``value`` with every lone surrogate replaced by U+FFFD, and a warning if any was."""
    if not value:
        return value
    fixed, count = encodable(value)
    if count:
        _log.warning("text_not_utf8", field=field, replaced=count, now="U+FFFD")
    return fixed


class PushRequest:
    """What to send: text (with optional title), and/or one media file with a caption."""

    def __init__(
        self,
        text: str | None = None,
        *,
        title: str | None = None,
        image: str | Path | None = None,
        file: str | Path | None = None,
        video: str | Path | None = None,
        caption: str | None = None,
    ) -> None:
        media = [(k, v) for k, v in (("image", image), ("file", file), ("video", video)) if v]
        if len(media) > 1:
            raise ValueError("send one of image, file or video at a time")
        if not media and not (text or title):
            raise ValueError("nothing to send: give a text or a file")
        # Every push (CLI, gateway, send_to_wechat, Bot.send) is built here: one place
        # makes its text encodable, so a stray byte costs a character, not the message.
        self.text = utf8_text(text, "text")
        self.title = utf8_text(title, "title")
        self.caption = utf8_text(caption, "caption")
        self.media = media[0] if media else None

    def payloads(self, chunk_size: int, run_id: str | None = None) -> list[Payload]:
        out: list[Payload] = []
        lead = self.caption if self.media else None
        if self.text or self.title or lead:
            body = "\n\n".join(x for x in (self.text, lead) if x)
            out += text_payloads(body, title=self.title, chunk_size=chunk_size, run_id=run_id)
        if self.media:
            kind, path = self.media
            out.append(media_payload(path, kind=kind, run_id=run_id))
        return out


async def catch_up(outbox: Outbox, account: Account, *, seconds: float = CATCH_UP_SECONDS) -> int:
    """One short getupdates pass when no ``ilinkbot run`` polls this account, so a push
    sees the newest context tokens. What arrives is stored (inbox, cursor, tokens) for
    a later ``run`` to handle. Returns the number of new messages."""
    store = outbox.store
    holder = await outbox.svc.read(store.lease_holder, account.bot_id)
    if holder is not None:
        return 0  # a poller owns getupdates for this account; use what it stored
    client = outbox.svc.client(account)
    cursor = await outbox.svc.read(store.get_cursor, account.bot_id)
    try:
        batch = await client.get_updates(cursor, timeout=seconds)
    except SessionExpired:
        raise
    except IlinkError as exc:
        _log.warning("catch_up_failed", account=account.bot_id, error=str(exc))
        return 0
    rows = await absorb_batch(outbox, account, batch)
    return len(rows)


async def push(
    svc: Service,
    request: PushRequest,
    *,
    to: Sequence[str] | str | None = None,
    account: str | None = None,
    catch_up_seconds: float = CATCH_UP_SECONDS,
    outbox: Outbox | None = None,
    next_ids: Callable[[int], list[str]] | None = None,
) -> SendResult:
    """Send ``request`` to each recipient (default: the account's owner).

    ``next_ids(n)``: the ``client_id``s of the next n messages (a handler's replies);
    fresh ids when not given."""
    recipients = [to] if isinstance(to, str) else list(to or [])
    store = svc.store
    payloads = request.payloads(svc.config.chunk_size)  # validate before any network call

    wanted: list[str | None] = list(recipients) or [None]
    stale: list[AccountError] = []  # why the expired account was not simply chosen

    def targets() -> tuple[Any, list[tuple[str, Peer | None]]]:
        # The account, then each recipient's user id and peer (reads only).
        try:
            acc = choose_account(store, account, for_users=recipients or None)
        except AccountError as exc:
            acc = (
                _expired_account(store, account) if exc.exit_code == Exit.SESSION_EXPIRED else None
            )
            if acc is None:
                raise
            stale.append(exc)
        try:
            return acc, [recipient_and_peer(store, acc, t) for t in wanted]
        except BotError:
            if stale:
                raise stale[0] from None
            raise

    acc, found = await svc.read(targets)
    users = [user for user, _ in found]
    outbox = outbox or Outbox(svc)
    expired = acc.state == "expired"
    caught_up = 0
    if catch_up_seconds > 0 and not expired:
        try:
            caught_up = await catch_up(outbox, acc, seconds=catch_up_seconds)
        except SessionExpired:
            await svc.mark_expired(acc.bot_id)
            expired = True
    if expired:
        # Nothing can go out on this token, but the push is kept for the owner's next
        # login (as a send that met -14 is); the result says session_expired (exit 6).
        kept: list[MessageOutcome] = []
        try:
            for user in users:
                ids = next_ids(len(payloads)) if next_ids else None
                kept += (await outbox.keep(acc, user, payloads, client_ids=ids)).messages
        except NoContextError:
            if stale:  # it could not be kept: the account error says what to do
                raise stale[0] from None
            raise
        return SendResult.combine(kept)
    if acc.last_used_at is None or datetime.now(UTC) - acc.last_used_at > TOUCH_EVERY:
        await svc.call(store.touch_account, acc.bot_id)
    if len(users) == 1:
        ids = next_ids(len(payloads)) if next_ids else None
        # the peer read above is current unless the catch-up brought new messages
        peer = None if caught_up else found[0][1]
        return await outbox.submit(acc, users[0], payloads, client_ids=ids, peer=peer)
    return await _fan_out(svc, outbox, acc, users, payloads, next_ids)


async def _fan_out(
    svc: Service,
    outbox: Outbox,
    account: Account,
    users: list[str],
    payloads: list[Payload],
    next_ids: Callable[[int], list[str]] | None,
) -> SendResult:
    """One push to many users: up to ``send_concurrency`` users at a time, each user's
    messages in order, paced by ``fanout_per_second`` for the account."""

    def every_user_can_be_messaged() -> None:
        # All or nothing: a recipient who never wrote fails the push before anyone gets it.
        for user in dict.fromkeys(users):
            messageable_peer(svc.store, account.bot_id, user)

    await svc.read(every_user_can_be_messaged)
    slots = asyncio.Semaphore(svc.config.send_concurrency)
    pacer = svc.pacer(account.bot_id)
    # ids are taken up front, in the users' order, so that they do not depend on timing
    ids = [next_ids(len(payloads)) if next_ids else None for _ in users]

    async def one(user: str, client_ids: list[str] | None) -> list[MessageOutcome]:
        async with slots:
            await pacer.take(len(payloads))
            return (await outbox.submit(account, user, payloads, client_ids=client_ids)).messages

    # A user named twice gets the push twice, one after the other.
    by_user: dict[str, list[int]] = {}
    for i, user in enumerate(users):
        by_user.setdefault(user, []).append(i)
    results: list[list[MessageOutcome]] = [[] for _ in users]

    async def user_in_order(user: str, positions: list[int]) -> None:
        for i in positions:
            results[i] = await one(user, ids[i])

    await asyncio.gather(*(user_in_order(u, p) for u, p in by_user.items()))
    return SendResult.combine([o for outcome in results for o in outcome])


def _expired_account(store: Any, wanted: str | None) -> Any | None:
    """The account a push means when it is known to be expired: the one named, else the
    default account, else (none is active) the only expired one, so a cron push is kept
    for the bot it always used.
    None when that is ambiguous: the caller's error stands."""
    wanted = wanted or store.default_account()
    if wanted:
        acc = find_account(store, wanted)
        return acc if acc is not None and acc.state == "expired" else None
    expired = [a for a in store.list_accounts() if a.state == "expired"]
    return expired[0] if len(expired) == 1 else None


def send_to_wechat(
    text: str | None = None,
    *,
    to: str | Sequence[str] | None = None,
    title: str | None = None,
    image: str | Path | None = None,
    file: str | Path | None = None,
    video: str | Path | None = None,
    account: str | None = None,
    caption: str | None = None,
    config: Config | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SendResult:
    """Send a push from a script or agent and say honestly what happened.

    ``to=None`` means the account's owner (the person who scanned the QR code).
    The result's ``state`` is ``delivered`` only when the server confirmed with a
    message id; ``held`` means the user's reply window is closed and the message will
    go out when they next write; ``unconfirmed`` means the server accepted it without
    proof of delivery; ``session_expired`` means the bot token is stale (``-14``): the
    message is kept and goes out, after the owner logs in again, when the user writes.
    Raises :class:`bot.errors.BotError` subclasses for a missing, expired or ambiguous
    account or an unknown recipient (``AccountError`` when several accounts are logged in
    and neither ``account`` nor a default account says which). Text that is not valid
    UTF-8 (lone surrogates) is sent with U+FFFD in their place, and a warning is logged.
    """
    request = PushRequest(text, title=title, image=image, file=file, video=video, caption=caption)
    cfg = config or load_config()

    async def run() -> SendResult:
        svc = Service(cfg, transport=transport)
        try:
            return await push(svc, request, to=to, account=account)
        finally:
            await svc.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    # Called from inside an event loop (a notebook, an async agent): use a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run()).result()
